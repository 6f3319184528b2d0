//! What a request allowed by the type gate must still go through under SMART (reference §4.7,
//! §8 rules 18–20): include/chain checks and v2 constraints for every context, `_type` narrowing
//! for type-less searches, the `$export` `_type` narrowing, and — for a `patient` context — the
//! confinement to the `fhirUser`'s compartment. The result is a [`Confinement`]: a plan the proxy
//! carries out (rewrite the query, check the body, the current resource or the response).

#[cfg(test)]
mod constraint_tests;
mod constraints;
mod parameters;
#[cfg(test)]
mod tests;

use super::{export_eligible_types, is_export, membership, FhirUser, SmartGrant};
use crate::actions::{DataAction, DataActions};
use crate::fhir::compartment::is_shared_type;
use crate::fhir::query::{encode, parameters};
use crate::fhir::resource_types::ResourceType;
use crate::fhir::{FhirRequest, Interaction};
pub use constraints::hides_answer;
use constraints::AcrossTypes;
pub use parameters::confine_condition;
use parameters::{canonical_parameter, check_names, check_shared_reach, RULE};

/// How a request is carried out under SMART.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Confinement {
    /// Forward unchanged.
    Forward,
    /// Forward with this query string instead of the client's.
    Rewrite {
        /// The client's query plus the narrowing parameters (`_type`, v2 constraints).
        query: String,
    },
    /// Forward with this query string, then drop from the returned Bundle every entry outside
    /// the compartment or of a type the scopes do not grant (reference §4.7, ADR-2607), or of a
    /// type they grant only under v2 constraints unless it is `proven`: the searched type,
    /// whose constraint the forwarded query carries.
    Search {
        /// The query to forward; `None` keeps the client's.
        query: Option<String>,
        /// The searched type whose v2 constraint the forwarded query carries, so that its
        /// entries need no further check.
        proven: Option<ResourceType>,
    },
    /// Forward; the returned resource must be in the compartment, else 404 (reference §4.7:
    /// "Out-of-compartment gives 404").
    Read,
    /// A change to a compartment type: the request body (`body`) and/or the current resource,
    /// fetched first (`current`), must be in the compartment (reference §8 rule 20).
    Write {
        /// The request body is checked (create, update).
        body: bool,
        /// The stored resource is fetched and checked first (update, delete).
        current: bool,
    },
    /// A patch of a compartment type: the current resource is fetched first and must be in the
    /// compartment, and so must the result of applying the body (JSON Patch only) to it.
    Patch,
    /// An instance history of a compartment type: the current resource is fetched first and
    /// must be in the compartment, else 404 — the history's `total` and paging would otherwise
    /// confirm another patient's resource and count its versions; the answer is then filtered.
    History,
    /// A patch of a type the grant reads only under v2 constraints, or not at all: forwarded
    /// with `Prefer: return=minimal`, and the resource the server answers with (the whole
    /// patched resource, fields the client never sent included) is not passed on (issue 20).
    Minimal,
}

impl Confinement {
    /// True when the stored resource must be read (and found in the compartment) first.
    pub fn reads_current(&self) -> bool {
        matches!(
            self,
            Confinement::Write { current: true, .. } | Confinement::Patch | Confinement::History
        )
    }
}

/// Why a request is refused by SMART enforcement; each names the rule it breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// 403 `forbidden`.
    #[error("{0}")]
    Forbidden(String),
    /// 404 `not-found`: the resource is outside the compartment, as if it did not exist.
    #[error("{0}")]
    NotFound(String),
    /// 400 `invalid`.
    #[error("{0}")]
    Invalid(String),
}

/// Plans a request that passed the type gate ([`super::authorize`]).
pub fn confine(
    request: &FhirRequest,
    query: Option<&str>,
    granted: DataActions,
    grant: &SmartGrant,
) -> Result<Confinement, Denial> {
    let gate = Gate { grant, granted };
    let searches = request.interaction.is_search()
        || (request.interaction == Interaction::Operation
            && request.operation.as_deref() == Some("everything"));
    let mut extra: Vec<(String, String)> = Vec::new();
    let export = is_export(request);
    if !export {
        // SMART v2 constraints hold on every interaction (issue 20): proven by a search of the
        // constrained type, or refused.
        gate.check_request_type(request)?;
    }
    if searches {
        gate.check_includes(request, query)?;
        extra.extend(gate.constraints(request, query)?);
    }
    if request.interaction == Interaction::SearchSystem {
        if let Some(types) = gate.narrow_types(query)? {
            extra.push(("_type".to_owned(), types.join(",")));
        }
    }
    let across = constraints::across_types(request);
    if !export && !matches!(across, AcrossTypes::No) {
        let narrowed = extra
            .iter()
            .find(|(name, _)| name == "_type")
            .map(|(_, types)| types.split(',').map(str::to_owned).collect());
        let types = match across {
            AcrossTypes::Listed => constraints::listed_types(query).or(narrowed),
            AcrossTypes::Any | AcrossTypes::No => None,
        };
        gate.check_answer_types(request, types.as_deref())?;
    }
    if export && request.interaction == Interaction::Operation {
        let listed = parameters(query).any(|(name, _)| name == "_type");
        if let (false, Some(types)) = (listed, export_eligible_types(grant, granted)) {
            extra.push(("_type".to_owned(), types.join(",")));
        }
    }
    // The searched type whose constraint the forwarded query carries: its entries are proven.
    let proven = request
        .resource_type
        .as_deref()
        .filter(|t| searches && gate.constrained_only(Some(t)))
        .and_then(ResourceType::parse);
    if proven.is_some() && parameters(query).any(|(name, _)| name.eq_ignore_ascii_case("_query")) {
        // A named query may ignore the other parameters, the constraint included.
        return Err(Denial::Forbidden(
            "_query (named queries) cannot carry a SMART v2 constraint (SMART v2 constraints \
             hold on every interaction)"
                .to_owned(),
        ));
    }
    let Some(user) = grant.compartment() else {
        // Answers that can hold any type (`Patient/1/*`, base history, `$everything`) are
        // filtered down to the scope types; so is every search while some type is read only
        // under constraints (an entry of it that is not a proven match is dropped).
        let any_type = request.resource_type.is_none()
            && (request.interaction.is_search()
                || request.interaction == Interaction::HistorySystem);
        let everything = request.operation.as_deref() == Some("everything");
        let filtered = (any_type || everything) && request.interaction != Interaction::SearchSystem
            || (searches && gate.some_constrained_type().is_some());
        if gate.hides_answer(request) {
            return Ok(Confinement::Minimal);
        }
        if filtered {
            return Ok(Confinement::Search {
                query: (!extra.is_empty()).then(|| append(query, &extra)),
                proven,
            });
        }
        return Ok(if extra.is_empty() {
            Confinement::Forward
        } else {
            Confinement::Rewrite {
                query: append(query, &extra),
            }
        });
    };
    gate.confine_to(user, request, query, extra, proven)
}

/// Parameter names that reach other resources.
const INCLUDES: [&str; 2] = ["_include", "_revinclude"];

#[derive(Clone, Copy)]
struct Gate<'a> {
    grant: &'a SmartGrant,
    granted: DataActions,
}

impl Gate<'_> {
    /// True when the scopes (∩ granted) let the caller see resources of `resource_type` (`None`:
    /// any type, so only `*` scopes count).
    fn readable(&self, resource_type: Option<&str>) -> bool {
        let scoped = match resource_type {
            Some(t) => self.grant.actions_for(Some(t)),
            None => self.grant.actions_for_any_type(),
        };
        let actions = self.granted.intersection(scoped);
        [DataAction::Read, DataAction::Search, DataAction::ReadById]
            .into_iter()
            .any(|a| actions.contains(a))
    }

    /// `_include`, `_revinclude`, chains and `_has` must reach only readable types (reference
    /// §8 rule 18); with v2 constraints on the searched type they are refused (→ 400).
    fn check_includes(&self, request: &FhirRequest, query: Option<&str>) -> Result<(), Denial> {
        let constrained = request.resource_type.as_deref().is_some_and(|t| {
            self.grant
                .scopes
                .constraints_for(t, DataAction::Search)
                .iter()
                .any(|c| !c.is_empty())
        });
        for (name, value) in parameters(query) {
            // Names compared as a case-insensitive server (ASP.NET, the OSS server) reads them:
            // `_INCLUDE` and `_Has:` reach other types just the same.
            let name = name.trim();
            let base = name.split(':').next().unwrap_or_default();
            let include = INCLUDES.iter().find(|i| i.eq_ignore_ascii_case(base));
            let reached: Vec<Option<String>> = if let Some(include) = include {
                include_targets(include, &value)
            } else if has_prefix(name) || name.contains('.') {
                chain_targets(name)
            } else {
                continue;
            };
            if constrained {
                return Err(Denial::Invalid(
                    "Include, RevInclude and Chained searches do not support SMART V2 \
                     finer-grained resource constraints using search parameters."
                        .to_owned(),
                ));
            }
            for target in reached {
                self.check_reach(name, target.as_deref())?;
                if !self.readable(target.as_deref()) {
                    let what = target.unwrap_or_else(|| {
                        "every type (name the target type, e.g. Observation:subject:Patient)"
                            .to_owned()
                    });
                    return Err(Denial::Forbidden(format!(
                        "'{name}={value}' reaches {what}, which the SMART scopes do not grant"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The SMART v2 constraints to AND into a search on the request's type (reference §4.7).
    /// Several constrained scopes are alternatives a query cannot OR: the one the client's query
    /// already satisfies is used, else the first (narrower, never wider).
    fn constraints(
        &self,
        request: &FhirRequest,
        query: Option<&str>,
    ) -> Result<Vec<(String, String)>, Denial> {
        let Some(resource_type) = request.resource_type.as_deref() else {
            return Ok(Vec::new());
        };
        let alternatives = self
            .grant
            .scopes
            .constraints_for(resource_type, DataAction::Search);
        if alternatives.is_empty() || alternatives.iter().any(Vec::is_empty) {
            return Ok(Vec::new());
        }
        let present: Vec<(String, String)> = parameters(query).collect();
        let chosen = alternatives
            .iter()
            .find(|alt| alt.iter().all(|pair| present.contains(pair)))
            .unwrap_or(&alternatives[0]);
        Ok(chosen
            .iter()
            .filter(|pair| !present.contains(pair))
            .cloned()
            .collect())
    }

    /// A type-less search is limited to the scope types (reference §4.7): a listed `_type` must
    /// be granted; without one, `_type` is set to the granted types. `Ok(None)`: no change.
    fn narrow_types(&self, query: Option<&str>) -> Result<Option<Vec<String>>, Denial> {
        let listed = constraints::listed_types(query).unwrap_or_default();
        if let Some(denied) = listed.iter().find(|t| !self.readable(Some(t))) {
            return Err(Denial::Forbidden(format!(
                "_type {denied} is not granted by the SMART scopes"
            )));
        }
        if !listed.is_empty() {
            return Ok(None);
        }
        let by_read = self.grant.scopes.granted_types(DataAction::Read);
        let by_search = self.grant.scopes.granted_types(DataAction::Search);
        match (by_read, by_search) {
            (None, _) | (_, None) => Ok(None),
            (Some(mut read), Some(search)) => {
                read.extend(search);
                read.sort();
                read.dedup();
                // A type read only under v2 constraints cannot be searched across types
                // (issue 20): it is left out, and searched on its own.
                read.retain(|t| !self.constrained_only(Some(t)));
                if read.is_empty() {
                    return Err(Denial::Forbidden(
                        "no SMART scope grants search on any type without search-parameter \
                         constraints (search a constrained type on its own)"
                            .to_owned(),
                    ));
                }
                Ok(Some(read))
            }
        }
    }

    /// A `patient` context: every interaction kept inside `user`'s compartment.
    fn confine_to(
        &self,
        user: &FhirUser,
        request: &FhirRequest,
        query: Option<&str>,
        mut extra: Vec<(String, String)>,
        proven: Option<ResourceType>,
    ) -> Result<Confinement, Denial> {
        let resource_type = request.resource_type.as_deref();
        let shared = resource_type.is_some_and(is_shared_type);
        let member = resource_type.is_some_and(|t| user.is_member_type(t));
        let own_type = resource_type == Some(user.owner.name());
        let own_id = request.id.as_deref() == Some(user.id.as_str());
        let outside = || {
            Denial::Forbidden(format!(
                "{request} is outside the compartment of {user} (patient context)"
            ))
        };
        let not_found =
            || Denial::NotFound(format!("{request} is not in the compartment of {user}"));
        // A named query (`_query`) may ignore the other parameters, the added compartment one
        // included.
        if parameters(query).any(|(name, _)| name == "_query") {
            return Err(Denial::Forbidden(
                "_query (named queries) is not allowed under a patient context".to_owned(),
            ));
        }
        let search = |extra: &[(String, String)]| Confinement::Search {
            query: (!extra.is_empty()).then(|| append(query, extra)),
            proven,
        };
        let searches = request.interaction.is_search()
            || (request.interaction == Interaction::Operation && own_type && own_id);
        if searches {
            check_names(query)?;
        }
        Ok(match request.interaction {
            Interaction::Capabilities | Interaction::Bundle => Confinement::Forward,
            Interaction::Read | Interaction::Vread | Interaction::HistoryInstance if shared => {
                Confinement::Forward
            }
            Interaction::Read | Interaction::Vread if own_type => {
                if !own_id {
                    return Err(not_found());
                }
                Confinement::Forward
            }
            Interaction::Read | Interaction::Vread if member => Confinement::Read,
            Interaction::HistoryInstance if own_type && !own_id => return Err(not_found()),
            Interaction::HistoryInstance if own_type => search(&[]),
            Interaction::HistoryInstance if member => Confinement::History,
            Interaction::HistoryType if shared => Confinement::Forward,
            Interaction::HistoryType | Interaction::HistorySystem => {
                return Err(unconfinable_history(request))
            }
            Interaction::SearchType if shared => {
                check_shared_reach(query)?;
                search(&extra)
            }
            Interaction::SearchType if member => {
                extra.push(canonical_parameter(user, resource_type, query)?);
                search(&extra)
            }
            Interaction::SearchCompartment => {
                let own = request
                    .compartment
                    .as_ref()
                    .is_some_and(|(c, id)| c == user.owner.name() && *id == user.id);
                if !own || !(resource_type.is_none() || shared || member) {
                    return Err(outside());
                }
                if member {
                    // The path confines; the parameters must still not name anyone else.
                    canonical_parameter(user, resource_type, query)?;
                }
                search(&extra)
            }
            Interaction::SearchSystem => {
                let types = extra
                    .iter()
                    .find(|(name, _)| name == "_type")
                    .map(|(_, v)| v.clone())
                    .or_else(|| {
                        parameters(query)
                            .find(|(name, _)| name == "_type")
                            .map(|(_, v)| v)
                    })
                    .unwrap_or_default();
                let types: Vec<&str> = types.split(',').filter(|t| !t.is_empty()).collect();
                if types.is_empty() || !types.iter().all(|t| is_shared_type(t)) {
                    return Err(Denial::Forbidden(
                        "a system search under a patient context may list only shared types \
                         in _type; search compartment types one type at a time"
                            .to_owned(),
                    ));
                }
                check_shared_reach(query)?;
                search(&extra)
            }
            Interaction::Create | Interaction::ConditionalCreate if member => Confinement::Write {
                body: true,
                current: false,
            },
            Interaction::Update if member => Confinement::Write {
                body: true,
                current: true,
            },
            Interaction::Patch if member => Confinement::Patch,
            Interaction::Delete if member => Confinement::Write {
                body: false,
                current: true,
            },
            Interaction::Operation
                if own_type && own_id && request.operation.as_deref() == Some("everything") =>
            {
                search(&extra)
            }
            Interaction::Operation if shared && request.id.is_none() => Confinement::Forward,
            _ => return Err(outside()),
        })
    }
}

/// Type- and system-level history cannot be confined upstream (history takes no search
/// parameters), and filtering the answer would still leak other patients' counts through its
/// `total` and its paging.
fn unconfinable_history(request: &FhirRequest) -> Denial {
    Denial::Forbidden(format!(
        "{request} is refused under a patient context ({RULE}: unconfinable history): a \
         history across resources cannot be limited to the compartment; read the history of \
         one resource, or search with _lastUpdated"
    ))
}

/// What `_include`/`_revinclude` value `value` reaches: the target type of an include
/// (`Source:param:Target`; `None` when not named, or `*`), the source type of a revinclude.
fn include_targets(kind: &str, value: &str) -> Vec<Option<String>> {
    let parts: Vec<&str> = value.split(':').collect();
    let reached = match (kind, parts.as_slice()) {
        ("_revinclude", [source, ..]) if *source != "*" => Some((*source).to_owned()),
        ("_include", [_, _, target]) => Some((*target).to_owned()),
        _ => None,
    };
    vec![reached]
}

/// True when a parameter name starts with `_has:`, in any case.
fn has_prefix(name: &str) -> bool {
    name.get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("_has:"))
}

/// What a chained name reaches: `subject:Patient.name` → Patient; `subject.name` → unknown;
/// `_has:Observation:patient:code` → Observation.
fn chain_targets(name: &str) -> Vec<Option<String>> {
    let mut reached = Vec::new();
    let mut rest = name;
    while let Some(after) = rest.get(5..).filter(|_| has_prefix(rest)) {
        let mut parts = after.splitn(3, ':');
        reached.push(parts.next().map(str::to_owned));
        parts.next();
        rest = parts.next().unwrap_or_default();
    }
    let links: Vec<&str> = rest.split('.').collect();
    for link in links.iter().take(links.len().saturating_sub(1)) {
        reached.push(link.split_once(':').map(|(_, t)| t.to_owned()));
    }
    reached
}

/// The client's query with `extra` pairs appended (FHIR ANDs repeated parameters).
fn append(query: Option<&str>, extra: &[(String, String)]) -> String {
    let mut out = query.unwrap_or_default().to_owned();
    for (name, value) in extra {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&encode(name));
        out.push('=');
        out.push_str(&encode(value));
    }
    out
}

/// True when an entry's resource may be returned under the grant: a type the scopes let the
/// caller read, not read only under v2 constraints unless it is the `proven` type (the
/// searched type, whose constraint the query carried), and, under a `patient` context, a
/// shared type or a compartment member.
pub fn visible(
    grant: &SmartGrant,
    granted: DataActions,
    resource: &serde_json::Value,
    proven: Option<&str>,
) -> bool {
    let gate = Gate { grant, granted };
    let resource_type = resource["resourceType"].as_str();
    if resource_type == Some("OperationOutcome") {
        return true;
    }
    resource_type.is_some_and(|t| {
        gate.readable(Some(t)) && (proven == Some(t) || !gate.constrained_only(Some(t)))
    }) && grant
        .compartment()
        .is_none_or(|user| membership::is_visible(resource, user))
}
