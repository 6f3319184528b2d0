//! SMART on FHIR enforcement on top of the baseline decision (reference §4, §8 rules 14–21):
//! when SMART applies, which scopes and `fhirUser` a token brings ([`SmartGrant`]), the type and
//! action gate (granted ∩ scope actions for the request's type, reference §4.7), the `$export`
//! rules (§4.8), and — in [`confine`] — how a request under a `patient` context is kept inside
//! the `fhirUser`'s compartment. Checking a resource against the compartment is [`membership`].
//! Pure: the proxy does the I/O the plans ask for.

mod confine;
pub mod enforcement;
#[cfg(test)]
mod grant_tests;
pub mod membership;
#[cfg(test)]
mod tests;

use std::fmt;

use crate::actions::{DataAction, DataActions};
use crate::authz::scope::{parse_scopes, Context, ResourceScope, ScopeError, ScopeSet};
use crate::authz::{authorize as baseline, decide, Decision, Reasons};
use crate::config::ProviderKind;
use crate::fhir::compartment::{
    patient_compartment_params, patient_compartment_paths, practitioner_compartment_params,
    practitioner_compartment_paths,
};
use crate::fhir::query::parameters;
use crate::fhir::reference::Literal;
use crate::fhir::{FhirRequest, Interaction};

pub use confine::{confine, confine_condition, hides_answer, visible, Confinement, Denial};

/// SMART applies to every smart identity provider's token, and to a primary-authority token whose
/// roles grant the `Smart` data action (reference §3.1, §4.1). Otherwise scopes are ignored.
pub fn applies(provider: ProviderKind, granted: DataActions) -> bool {
    match provider {
        ProviderKind::Smart { .. } => true,
        ProviderKind::Primary => granted.contains(DataAction::Smart),
    }
}

/// The resource type of a `fhirUser`: the owner of the compartment a `patient` context is
/// confined to (reference §4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerType {
    /// A patient: the R4 Patient compartment.
    Patient,
    /// A clinician: the R4 Practitioner compartment (reference §4.5: a Practitioner `fhirUser`
    /// with `patient/` scopes is confined to it).
    Practitioner,
}

impl OwnerType {
    /// The FHIR resource type name, as written in references (`Patient/123`).
    pub fn name(self) -> &'static str {
        match self {
            OwnerType::Patient => "Patient",
            OwnerType::Practitioner => "Practitioner",
        }
    }
}

/// A parsed `fhirUser` claim: `…/Patient/<id>` or `…/Practitioner/<id>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FhirUser {
    /// The resource type the claim names.
    pub owner: OwnerType,
    /// The resource id the claim names (a valid FHIR id).
    pub id: String,
    /// `publicBaseUrl` without its trailing slash: the only base at which an absolute reference
    /// names this user. `None`: only the relative reference does (see [`FhirUser::is_named_by`]).
    pub base: Option<String>,
}

impl FhirUser {
    /// Parses the claim (reference §4.5, `FhirUserClaimParser`): a reference to a `Patient` or
    /// `Practitioner`, relative (`Practitioner/7`, as the open-source server accepts and many
    /// identity providers emit it) or absolute (`https://fhir.example.org/Patient/123`, http or
    /// https, no query or fragment). A relative claim is exactly `<type>/<id>`. When
    /// `public_base` is set, an absolute claim must be `<public_base>/<type>/<id>` (reference §8
    /// rule 16, a recommendation).
    pub fn parse(claim: &str, public_base: Option<&url::Url>) -> Result<FhirUser, SmartError> {
        let not_a_reference = || SmartError::FhirUserShape(claim.to_owned());
        let trimmed = claim.trim_end_matches('/');
        let absolute = trimmed.contains("://");
        let reference = if absolute {
            absolute_reference(trimmed).ok_or_else(not_a_reference)?
        } else {
            trimmed
        };
        let (kind, id) = reference.split_once('/').ok_or_else(not_a_reference)?;
        if id.contains('/') || !valid_id(id) {
            return Err(not_a_reference());
        }
        let owner = match kind {
            "Patient" => OwnerType::Patient,
            "Practitioner" => OwnerType::Practitioner,
            _ => return Err(SmartError::FhirUserType(claim.to_owned())),
        };
        if let Some(base) = public_base.filter(|_| absolute) {
            let base = base.as_str().trim_end_matches('/');
            if trimmed != format!("{base}/{}/{id}", owner.name()) {
                return Err(SmartError::FhirUserBase(claim.to_owned(), base.to_owned()));
            }
        }
        Ok(FhirUser {
            owner,
            id: id.to_owned(),
            base: public_base.map(|b| b.as_str().trim_end_matches('/').to_owned()),
        })
    }

    /// The `Patient/<id>` a launch-context claim names (SMART App Launch 2.x §launch context:
    /// `patient` is the id of the chosen Patient); `Patient/<id>` is accepted too.
    /// `public_base` as for [`FhirUser::parse`]: where an absolute reference names the patient.
    pub fn launch_patient(
        claim: &str,
        public_base: Option<&url::Url>,
    ) -> Result<FhirUser, SmartError> {
        let id = claim.strip_prefix("Patient/").unwrap_or(claim);
        if !valid_id(id) {
            return Err(SmartError::LaunchPatient(claim.to_owned()));
        }
        Ok(FhirUser {
            owner: OwnerType::Patient,
            id: id.to_owned(),
            base: public_base.map(|b| b.as_str().trim_end_matches('/').to_owned()),
        })
    }

    /// The relative reference, `Patient/123`.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.owner.name(), self.id)
    }

    /// True when a reference string points at this user: a canonical literal reference
    /// ([`Literal`]) to the user's type and id, relative or absolute at `publicBaseUrl`,
    /// optionally versioned (`Patient/123/_history/2`). A spelling that is not canonical
    /// (`Patient/123/`, `Patient//123`, `./Patient/123`, `patient/123`, `Patient/%31%32%33`)
    /// is not the user whatever a server would make of it: membership fails closed
    /// (compartment hardening: references are canonical).
    pub fn is_referenced_by(&self, reference: &str) -> bool {
        Literal::parse(reference).is_some_and(|literal| self.is_literal(&literal))
    }

    /// True when a canonical reference names this user: type, id and (for an absolute one)
    /// base all exact.
    pub fn is_literal(&self, literal: &Literal<'_>) -> bool {
        literal.resource_type == self.owner.name()
            && literal.id == self.id
            && literal
                .base
                .is_none_or(|base| self.base.as_deref() == Some(base))
    }

    /// True when `text` is exactly this user's reference: relative (`Patient/123`) or absolute
    /// at `publicBaseUrl` (`https://base/Patient/123`). Anything else — another server's
    /// `Patient/123`, `foo/Patient/123`, a bare id — is not the user: the FHIR server would
    /// read it as another resource or not at all (hardening: canonical compartment references).
    pub fn is_named_by(&self, text: &str) -> bool {
        self.is_named_by_relative(text)
            || self.base.as_deref().is_some_and(|base| {
                text.strip_prefix(base)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .is_some_and(|rest| self.is_named_by_relative(rest))
            })
    }

    fn is_named_by_relative(&self, text: &str) -> bool {
        text.strip_prefix(self.owner.name())
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|id| id == self.id)
    }

    /// The search parameters putting `resource_type` in this user's compartment (R4
    /// CompartmentDefinitions); `None` when the type is never a member.
    pub fn compartment_params(&self, resource_type: &str) -> Option<&'static [&'static str]> {
        match self.owner {
            OwnerType::Patient => patient_compartment_params(resource_type),
            OwnerType::Practitioner => practitioner_compartment_params(resource_type),
        }
    }

    /// Where those parameters point inside a resource of `resource_type`: `(parameter, path)`
    /// pairs, each path ending at a `Reference` ([`crate::fhir::compartment`]).
    pub fn compartment_paths(
        &self,
        resource_type: &str,
    ) -> Option<&'static [(&'static str, &'static str)]> {
        match self.owner {
            OwnerType::Patient => patient_compartment_paths(resource_type),
            OwnerType::Practitioner => practitioner_compartment_paths(resource_type),
        }
    }

    /// True when resources of this type can be in the compartment (the owner's own type is).
    pub fn is_member_type(&self, resource_type: &str) -> bool {
        resource_type == self.owner.name() || self.compartment_params(resource_type).is_some()
    }
}

impl fmt::Display for FhirUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reference())
    }
}

/// `<type>/<id>`: the last two path segments of an absolute http(s) URL without query or
/// fragment, as written in the claim.
fn absolute_reference(claim: &str) -> Option<&str> {
    let url = url::Url::parse(claim).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return None;
    }
    let mut segments = url.path_segments()?.rev();
    let (id, kind) = (segments.next()?, segments.next()?);
    let suffix = format!("/{kind}/{id}");
    claim
        .ends_with(&suffix)
        .then(|| &claim[claim.len() - suffix.len() + 1..])
}

/// A FHIR id (R4 §2.24.0.3 `id`): `[A-Za-z0-9\-\.]{1,64}`.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// What a token brings under SMART: its clinical scopes, its `fhirUser` (required for
/// `patient`/`user` contexts), and the patient chosen at launch when the configuration names a
/// launch-context claim (`smartLaunchPatientClaim`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmartGrant {
    /// The clinical scopes of the token's `scp`/`scope` claims.
    pub scopes: ScopeSet,
    /// The parsed `fhirUser` (or `extension_fhirUser`) claim; `None` unless the scopes are
    /// `patient/` or `user/`.
    pub user: Option<FhirUser>,
    /// The launch context's patient: under a `patient` context, the compartment owner instead of
    /// `fhirUser` (an EHR launch: the Practitioner opens the chosen patient's record).
    pub launch_patient: Option<FhirUser>,
}

impl SmartGrant {
    /// Builds the grant from the token's scope values and `fhirUser` (reference §8 rules 14–16).
    /// `fhirUser` is required for `patient` and `user` contexts only: `system` scopes (SMART
    /// Backend Services, client_credentials) name no user, and a `fhirUser` they carry anyway is
    /// not used.
    pub fn new(
        scopes: &[String],
        fhir_user: Option<&str>,
        public_base: Option<&url::Url>,
    ) -> Result<SmartGrant, SmartError> {
        let scopes = parse_scopes(scopes)?;
        let needs_user = matches!(scopes.context(), Some(Context::Patient | Context::User));
        let user = match fhir_user {
            Some(claim) if needs_user => Some(FhirUser::parse(claim, public_base)?),
            None if needs_user => return Err(SmartError::MissingFhirUser),
            _ => None,
        };
        Ok(SmartGrant {
            scopes,
            user,
            launch_patient: None,
        })
    }

    /// Adds the launch-context patient (the value of the configured claim, when the token has
    /// it). It is used under a `patient` context only; a malformed value is refused whatever the
    /// context, since the identity provider meant it to confine.
    pub fn with_launch_patient(
        mut self,
        claim: Option<&str>,
        public_base: Option<&url::Url>,
    ) -> Result<SmartGrant, SmartError> {
        self.launch_patient = claim
            .map(|claim| FhirUser::launch_patient(claim, public_base))
            .transpose()?;
        Ok(self)
    }

    /// The compartment owner a `patient` context is confined to: the launch-context patient when
    /// the token carries one, else `fhirUser`. `None` for `user` and `system` contexts, which
    /// the scopes gate by type and action only.
    pub fn compartment(&self) -> Option<&FhirUser> {
        match self.scopes.context() {
            Some(Context::Patient) => self.launch_patient.as_ref().or(self.user.as_ref()),
            _ => None,
        }
    }

    /// The actions the scopes grant on `resource_type` (`None`: a type-less request, the union).
    pub fn actions_for(&self, resource_type: Option<&str>) -> DataActions {
        self.scopes.actions_for_type(resource_type)
    }

    /// The actions granted on every type by `*`/`all` scopes: what an include of unknown target
    /// type may reach.
    fn actions_for_any_type(&self) -> DataActions {
        self.scopes
            .scopes()
            .iter()
            .filter(|s| s.resource == ResourceScope::All)
            .fold(DataActions::NONE, |all, s| all.union(s.actions()))
    }
}

/// Why a token's SMART claims are refused: a 400 `invalid` OperationOutcome (reference §4.4–4.6).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SmartError {
    /// The scope claims are malformed (reference §4.4).
    #[error(transparent)]
    Scope(#[from] ScopeError),
    /// `patient/` or `user/` scopes without a `fhirUser` claim: refused rather than left
    /// without a compartment (MSRC-128308, PR #5688).
    #[error(
        "The token's patient/ or user/ scopes need a fhirUser claim (or extension_fhirUser) \
         naming the Patient or Practitioner they act for; system/ scopes need none."
    )]
    MissingFhirUser,
    /// The `fhirUser` names a resource other than a Patient or Practitioner.
    #[error(
        "The given fhirUser claim:{0} is not valid. It must have a resource type of Patient or \
         Practitioner and a resource id."
    )]
    FhirUserType(String),
    /// The `fhirUser` is not `<type>/<id>`, relative or as an http(s) URL.
    #[error(
        "The fhirUser claim '{0}' is not a resource reference: expected <resourceType>/<id>, \
         relative (Practitioner/7) or an absolute http(s) URL ending in it."
    )]
    FhirUserShape(String),
    /// An absolute `fhirUser` at a base other than `publicBaseUrl` (reference §8 rule 16, a
    /// recommendation); holds the claim and the expected base.
    #[error("The fhirUser claim {0} is not a resource of this FHIR service ({1}).")]
    FhirUserBase(String, String),
    /// The launch-context claim is not a Patient id (`<id>` or `Patient/<id>`).
    #[error(
        "The launch-context patient '{0}' is not a Patient id (expected <id> or Patient/<id>)."
    )]
    LaunchPatient(String),
}

/// The type and action gate (reference §4.7, §8 rule 11): the request's requirement must be met
/// by `granted` (roles or `allowedDataActions`) ∩ the scope actions for its resource type.
/// `$member-match` is always denied and `$export` follows reference §4.8.
pub fn authorize(
    request: &FhirRequest,
    query: Option<&str>,
    granted: DataActions,
    grant: &SmartGrant,
    reasons: Reasons,
) -> Decision {
    let operation = request.operation.as_deref();
    if request.interaction == Interaction::Operation && operation == Some("member-match") {
        return denied(request, granted, "$member-match is not allowed under SMART");
    }
    if is_export(request) {
        return authorize_export(request, query, granted, grant);
    }
    let scoped = grant.actions_for(request.resource_type.as_deref());
    let mut decision = decide(request, granted.intersection(scoped), reasons);
    if !decision.reason.is_empty() {
        let subject = request.resource_type.as_deref().unwrap_or("any type");
        decision.reason = format!(
            "{} (granted {granted} ∩ SMART scopes on {subject}: {scoped})",
            decision.reason
        );
    }
    decision
}

/// `$export` and its status/cancel endpoints.
pub fn is_export(request: &FhirRequest) -> bool {
    matches!(
        request.interaction,
        Interaction::Operation | Interaction::OperationStatus
    ) && request.operation.as_deref() == Some("export")
}

/// Reference §4.8: only unconstrained `system/` scopes count; each required type needs v1 read
/// (or v2 `r`+`s`) and Export. Without `_type`, at least one type must be eligible (the proxy
/// then narrows `_type`, see [`confine`]).
fn authorize_export(
    request: &FhirRequest,
    query: Option<&str>,
    granted: DataActions,
    grant: &SmartGrant,
) -> Decision {
    if grant.scopes.context() != Some(Context::System) {
        return denied(
            request,
            granted,
            "$export under SMART requires system/ scopes",
        );
    }
    let required = export_types(request, query);
    if required.is_empty() {
        if export_eligible_types(grant, granted).is_some_and(|types| types.is_empty()) {
            return denied(
                request,
                granted,
                "no unconstrained system/ scope grants read and export on any type",
            );
        }
    } else if let Some(missing) = required
        .iter()
        .find(|t| !export_eligible(grant, granted, Some(t)))
    {
        return denied(
            request,
            granted,
            &format!("no unconstrained system/ scope grants read and export on {missing}"),
        );
    }
    let mut decision = baseline(request, granted);
    decision.reason = format!("{} (SMART export rules, reference §4.8)", decision.reason);
    decision
}

/// The types an export needs: Patient for `Patient/$export`, Group and Patient for a group
/// export, plus every `_type` listed.
fn export_types(request: &FhirRequest, query: Option<&str>) -> Vec<String> {
    let mut types: Vec<String> = match request.resource_type.as_deref() {
        Some("Patient") => vec!["Patient".to_owned()],
        Some("Group") => vec!["Group".to_owned(), "Patient".to_owned()],
        _ => Vec::new(),
    };
    for (name, value) in parameters(query) {
        if name == "_type" {
            types.extend(value.split(',').map(|t| t.trim().to_owned()));
        }
    }
    types.retain(|t| !t.is_empty());
    types
}

fn export_eligible(grant: &SmartGrant, granted: DataActions, resource_type: Option<&str>) -> bool {
    use DataAction::{Export, Read, ReadById, Search};
    let actions = granted.intersection(grant.scopes.unconstrained_actions_for_type(resource_type));
    actions.contains_all(DataActions::of(&[Read, Export]))
        || actions.contains_all(DataActions::of(&[ReadById, Search, Export]))
}

/// The types an export without `_type` may cover: `None` for every type (an eligible `*` scope),
/// else the eligible named types.
fn export_eligible_types(grant: &SmartGrant, granted: DataActions) -> Option<Vec<String>> {
    let wildcard = grant
        .scopes
        .scopes()
        .iter()
        .any(|s| s.resource == ResourceScope::All && !s.is_constrained());
    if wildcard && export_eligible(grant, granted, Some("*")) {
        return None;
    }
    let mut types: Vec<String> = grant
        .scopes
        .scopes()
        .iter()
        .filter_map(|s| match &s.resource {
            ResourceScope::Type(name) => Some(name.clone()),
            ResourceScope::All => None,
        })
        .filter(|t| export_eligible(grant, granted, Some(t)))
        .collect();
    types.sort();
    types.dedup();
    Some(types)
}

fn denied(request: &FhirRequest, granted: DataActions, why: &str) -> Decision {
    Decision {
        allowed: false,
        required: request.required.clone(),
        granted,
        reason: format!("{request}: {why}"),
    }
}
