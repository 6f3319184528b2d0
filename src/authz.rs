//! Authorization: the baseline decision of SPEC §4 step 8 — the request's required data actions
//! (reference §3.2, computed by [`crate::fhir::classify`]) against the actions the principal was
//! granted (`allowedDataActions` of a smart provider's application, or the role mapping of the
//! primary authority; reference §8 rule 11). SMART scope narrowing comes on top of this. Pure.
//!
//! A batch or transaction (reference §3.2, `BundleHandler.cs`) is allowed only when the principal
//! holds at least one data action (the OSS pre-check `CheckAccess(All) != None`) and every
//! entry's requirement is met. The per-entry decisions are kept, in entry order, so that a batch
//! can later be answered entry by entry.

pub mod scope;
pub mod smart;
#[cfg(test)]
mod tests;

use std::fmt;

use crate::actions::{DataAction, DataActions, Requirement};
use crate::fhir::bundle::{BundleKind, BundleRequest};
use crate::fhir::FhirRequest;

/// The decision for one request (or one bundle entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request (or entry) may be forwarded; a denial is answered 403 `forbidden`
    /// (reference §8 rule 13).
    pub allowed: bool,
    /// The data actions the request needs (reference §3.2), as [`crate::fhir::classify`] found.
    pub required: Requirement,
    /// The data actions weighed against `required`: the principal's roles or
    /// `allowedDataActions`; under SMART's type gate, intersected with the scope actions for the
    /// request's type.
    pub granted: DataActions,
    /// Why: what was required and what was granted, e.g. `create requires Write | Create;
    /// granted Read`. Safe to show the caller (it names only their own grants).
    pub reason: String,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed { "allowed" } else { "denied" };
        write!(f, "{verdict}: {}", self.reason)
    }
}

/// The decision for a batch or transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleDecision {
    /// Whether the bundle may be forwarded: the pre-check passed and every entry is allowed.
    pub allowed: bool,
    /// Batch or transaction (the bundle's `type`): a transaction fails as a whole on one denied
    /// entry, a batch may be answered per entry (reference §3.2, `BundleHandler.cs`).
    pub kind: BundleKind,
    /// The principal's data actions, before any SMART narrowing: what the pre-check reads.
    pub granted: DataActions,
    /// One decision per entry, in entry order.
    pub entries: Vec<Decision>,
    /// Why: the first denied entry, or the missing pre-check action.
    pub reason: String,
}

impl BundleDecision {
    /// The denied entries with their indexes.
    pub fn denied_entries(&self) -> impl Iterator<Item = (usize, &Decision)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, decision)| !decision.allowed)
    }
}

impl fmt::Display for BundleDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed { "allowed" } else { "denied" };
        write!(f, "{verdict}: {}", self.reason)
    }
}

/// When a decision writes its `reason`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reasons {
    /// Only for a denial, which is answered and logged with it: what serving needs, without
    /// formatting a text per allowed request.
    #[default]
    OnDenial,
    /// Always (`fhirguard explain`, bundle entries).
    Always,
}

/// Decides one request: allowed when `granted` covers one alternative of its requirement
/// (reference §8 rule 11). An empty requirement is never met (fail closed).
pub fn authorize(request: &FhirRequest, granted: DataActions) -> Decision {
    decide(request, granted, Reasons::Always)
}

/// [`authorize`], writing the reason as `reasons` says (empty when it is not written).
pub fn decide(request: &FhirRequest, granted: DataActions, reasons: Reasons) -> Decision {
    let allowed = request.required.is_met_by(granted);
    let reason = if allowed && reasons == Reasons::OnDenial {
        String::new()
    } else {
        format!(
            "{request} requires {}; granted {granted}",
            describe(&request.required)
        )
    };
    Decision {
        allowed,
        required: request.required.clone(),
        granted,
        reason,
    }
}

/// Decides a batch or transaction: the principal must hold at least one data action, and every
/// entry must be allowed on its own.
pub fn authorize_bundle(bundle: &BundleRequest, granted: DataActions) -> BundleDecision {
    authorize_bundle_with(bundle, granted, |entry| authorize(entry, granted))
}

/// Like [`authorize_bundle`], deciding each entry with `decide` (the SMART decision when SMART
/// applies).
pub fn authorize_bundle_with(
    bundle: &BundleRequest,
    granted: DataActions,
    decide: impl Fn(&FhirRequest) -> Decision,
) -> BundleDecision {
    let entries: Vec<Decision> = bundle.entries.iter().map(decide).collect();
    let has_any_action = !granted.intersection(DataActions::ALL).is_empty();
    let first_denied = entries.iter().position(|decision| !decision.allowed);
    let (allowed, reason) = match (has_any_action, first_denied) {
        (false, _) => (
            false,
            format!(
                "a {} requires at least one data action; granted {granted}",
                bundle.kind
            ),
        ),
        (true, Some(index)) => (
            false,
            format!("{} entry[{index}]: {}", bundle.kind, entries[index].reason),
        ),
        (true, None) => (
            true,
            format!(
                "every entry of the {} ({}) is allowed; granted {granted}",
                bundle.kind,
                entries.len()
            ),
        ),
    };
    BundleDecision {
        allowed,
        kind: bundle.kind,
        granted,
        entries,
        reason,
    }
}

/// A requirement in words: `*` and "any data action" spelled out rather than listed.
fn describe(required: &Requirement) -> String {
    if required.alternatives == [DataActions::ALL] {
        return "every data action (*)".to_owned();
    }
    if *required == Requirement::any_of(&DataAction::ALL) {
        return "any data action".to_owned();
    }
    if required.alternatives.is_empty() {
        return "an unsatisfiable requirement".to_owned();
    }
    required.to_string()
}
