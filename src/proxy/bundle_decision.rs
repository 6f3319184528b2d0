//! SPEC §4 step 8 for a batch/transaction, once its body is read: every entry classified and
//! authorized (reference §3.2), under SMART each entry held to what fhirguard can carry out
//! inside a bundle, and report-only mode's relaxation of a denied bundle.

use std::sync::Arc;

use bytes::Bytes;

use crate::actions::DataActions;
use crate::authz::smart::{self, Confinement, SmartGrant};
use crate::authz::{self, Decision, Reasons};
use crate::error::Rejection;
use crate::fhir::{bundle, FhirRequest};
use crate::proxy::judgement::{AuthorizedBundle, Classified, Judge, Refused, Trace};

/// Step 8 for a batch/transaction: every entry classified and authorized (reference §3.2). A
/// transaction with a denied entry is refused whole; a batch passes when the principal holds
/// any data action, and its denied entries are answered one by one
/// ([`crate::authz::BundleDecision`]).
/// Under SMART an entry must also need no further confinement (no query rewrite, response or
/// compartment check), since those are carried out only for requests sent on their own.
pub(super) fn decide_bundle(
    judge: &Judge<'_>,
    classified: Classified,
    body: Bytes,
) -> Result<AuthorizedBundle, Refused> {
    let Classified {
        path,
        session,
        granted,
        grant,
        ..
    } = classified;
    let trace = Trace {
        path: Some(path.clone()),
        principal: Some(Arc::clone(session.principal())),
        granted: Some(granted),
        grant: grant.clone(),
        ..Trace::default()
    };
    let bundle = match bundle::classify_bundle(&body) {
        Ok(bundle) => bundle,
        Err(error) => return Err(Refused::new(error, trace)),
    };
    let decision = match &grant {
        Some(grant) => authz::authorize_bundle_with(&bundle, granted, |entry| {
            smart_entry(entry, granted, grant)
        }),
        None => authz::authorize_bundle(&bundle, granted),
    };
    let plans = match &grant {
        Some(grant) => bundle
            .entries
            .iter()
            .zip(&decision.entries)
            .map(|(entry, decided)| match decided.allowed {
                true => smart::confine(entry, entry.query.as_deref(), granted, grant)
                    .unwrap_or(Confinement::Forward),
                false => Confinement::Forward,
            })
            .collect(),
        None => Vec::new(),
    };
    let batch_answerable = decision.kind == bundle::BundleKind::Batch
        && !granted.intersection(DataActions::ALL).is_empty();
    // Report-only mode forwards a bundle's denied entries too — but not under a SMART grant,
    // whose entries may be denied because they need compartment checks a bundle cannot have.
    let mut decision = decision;
    let mut would_be = None;
    let denied = !decision.allowed || decision.denied_entries().next().is_some();
    if denied && grant.is_none() && judge.reports_only(&session) {
        would_be = Some(Box::new(Rejection::BundleDenied(Box::new(
            decision.clone(),
        ))));
        decision.allowed = true;
        for entry in &mut decision.entries {
            entry.allowed = true;
        }
    }
    if !decision.allowed && !batch_answerable {
        let rejection = Rejection::BundleDenied(Box::new(decision.clone()));
        let trace = Trace {
            bundle: Some(decision),
            ..trace
        };
        return Err(Refused::new(rejection, trace));
    }
    Ok(AuthorizedBundle {
        path,
        session,
        granted,
        grant,
        decision,
        plans,
        body,
        would_be,
    })
}

/// One bundle entry under SMART: the type gate, then a confinement fhirguard can carry out
/// inside a bundle — a forward, a rewritten entry URL, a check of the entry's answer (read), a
/// filter of it (search) or its resource left out (a patch the grant cannot read). Writes
/// needing a compartment check are denied inside bundles.
fn smart_entry(entry: &FhirRequest, granted: DataActions, grant: &SmartGrant) -> Decision {
    let query = entry.query.as_deref();
    let mut decision = smart::authorize(entry, query, granted, grant, Reasons::Always);
    if decision.allowed {
        match smart::confine(entry, query, granted, grant) {
            Ok(
                Confinement::Forward
                | Confinement::Rewrite { .. }
                | Confinement::Read
                | Confinement::Search { .. }
                | Confinement::Minimal,
            ) => {}
            Ok(Confinement::Write { .. } | Confinement::Patch | Confinement::History) => {
                decision.allowed = false;
                decision.reason = format!(
                    "{entry} needs a compartment check of the stored resource, which \
                     fhirguard makes only for a request sent on its own"
                );
            }
            Err(denial) => {
                decision.allowed = false;
                decision.reason = denial.to_string();
            }
        }
    }
    decision
}
