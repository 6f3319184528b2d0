//! FHIR operations (`$name`) and the OSS server's asynchronous-job endpoints
//! (`_operations/<kind>/<id>`): where each known operation may be invoked, with which methods,
//! and which data actions it needs (reference §3.2).
//!
//! An operation that is not in the table is forwarded only to a principal holding every data
//! action (`*`, reference §3.1): fhirguard cannot know what an unknown operation reads or changes,
//! so it fails closed rather than guessing. Names are matched ASCII case-insensitively, as the
//! OSS server's routes are, so `$EXPORT` needs what `$export` needs.

use super::{ClassifyError, Verb};
use crate::actions::{DataAction, DataActions, Requirement};
use DataAction as A;
use Verb::{Delete, Get, Patch, Post, Put};

/// Where an operation is invoked.
#[derive(Clone, Copy, Debug)]
pub(super) enum Level<'a> {
    System,
    Type(&'a str),
    Instance(&'a str),
}

/// Where an operation may be invoked: at the base, on a type, or on an instance, of any type or
/// of one named type.
#[derive(Clone, Copy, Debug)]
enum At {
    System,
    AnyType,
    Type(&'static str),
    AnyInstance,
    Instance(&'static str),
}

/// What an operation requires.
#[derive(Clone, Copy, Debug)]
enum Need {
    /// Every one of these actions.
    AllOf(&'static [DataAction]),
    /// Any one data action (as for the bundle pre-check); used for the normally anonymous
    /// `$versions`.
    AnyAction,
    /// `$bulk-delete`: Delete, plus HardDelete unless soft (`CreateBulkDeleteHandler`).
    BulkDelete,
    /// `SearchParameter/$status`: GET reads (Read), anything else updates (SearchParameter);
    /// `SearchParameterStateHandler` / `…UpdateHandler`.
    SearchParameterStatus,
}

#[derive(Debug)]
struct Rule {
    name: &'static str,
    at: &'static [At],
    verbs: &'static [Verb],
    need: Need,
}

/// The known operations (reference §3.2; placements from the R4 OperationDefinitions and the OSS
/// routes).
const RULES: &[Rule] = &[
    rule(
        "export",
        &[At::System, At::Type("Patient"), At::Instance("Group")],
        &[Get, Post],
        Need::AllOf(&[A::Export]),
    ),
    rule("import", &[At::System], &[Post], Need::AllOf(&[A::Import])),
    rule(
        "reindex",
        &[At::System, At::AnyInstance],
        &[Get, Post],
        Need::AllOf(&[A::Reindex]),
    ),
    rule(
        "purge-history",
        &[At::AnyInstance],
        &[Delete],
        Need::AllOf(&[A::Delete, A::HardDelete]),
    ),
    rule(
        "convert-data",
        &[At::System],
        &[Post],
        Need::AllOf(&[A::ConvertData]),
    ),
    rule(
        "validate",
        &[At::AnyType, At::AnyInstance],
        &[Get, Post],
        Need::AllOf(&[A::ResourceValidate]),
    ),
    rule(
        "everything",
        &[
            At::Type("Patient"),
            At::Instance("Patient"),
            At::Instance("Encounter"),
        ],
        &[Get, Post],
        Need::AllOf(&[A::Read]),
    ),
    rule(
        "member-match",
        &[At::Type("Patient")],
        &[Post],
        Need::AllOf(&[A::Read]),
    ),
    // Terminology (`TerminologyRequestHandler`): Read.
    rule(
        "expand",
        &[At::Type("ValueSet"), At::Instance("ValueSet")],
        &[Get, Post],
        Need::AllOf(&[A::Read]),
    ),
    rule(
        "lookup",
        &[At::Type("CodeSystem")],
        &[Get, Post],
        Need::AllOf(&[A::Read]),
    ),
    rule(
        "validate-code",
        &[
            At::Type("ValueSet"),
            At::Instance("ValueSet"),
            At::Type("CodeSystem"),
            At::Instance("CodeSystem"),
        ],
        &[Get, Post],
        Need::AllOf(&[A::Read]),
    ),
    rule(
        "translate",
        &[At::Type("ConceptMap"), At::Instance("ConceptMap")],
        &[Get, Post],
        Need::AllOf(&[A::Read]),
    ),
    rule(
        "subsumes",
        &[At::Type("CodeSystem"), At::Instance("CodeSystem")],
        &[Get, Post],
        Need::AllOf(&[A::Read]),
    ),
    rule("closure", &[At::System], &[Post], Need::AllOf(&[A::Read])),
    rule(
        "bulk-delete",
        &[At::System, At::AnyType],
        &[Delete],
        Need::BulkDelete,
    ),
    rule(
        "bulk-update",
        &[At::System, At::AnyType],
        &[Patch, Post],
        Need::AllOf(&[A::BulkOperator]),
    ),
    rule("versions", &[At::System], &[Get], Need::AnyAction),
    rule(
        "status",
        &[At::Type("SearchParameter")],
        &[Get, Post, Put],
        Need::SearchParameterStatus,
    ),
];

const fn rule(name: &'static str, at: &'static [At], verbs: &'static [Verb], need: Need) -> Rule {
    Rule {
        name,
        at,
        verbs,
        need,
    }
}

/// The requirement of operation `name` (without `$`, any case) invoked at `level` with `verb`.
/// `path` is only used in error messages.
pub(super) fn requirement(
    name: &str,
    level: Level<'_>,
    verb: Verb,
    query: Option<&str>,
    path: &str,
) -> Result<Requirement, ClassifyError> {
    let Some(rule) = RULES.iter().find(|r| r.name.eq_ignore_ascii_case(name)) else {
        return Ok(every_action());
    };
    if !rule.at.iter().any(|at| at.admits(level)) {
        return Err(ClassifyError::OperationNotSupported {
            operation: rule.name.to_owned(),
            path: path.to_owned(),
        });
    }
    if !rule.verbs.contains(&verb) {
        return Err(ClassifyError::MethodNotAllowed {
            method: verb.name().to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(match rule.need {
        Need::AllOf(actions) => Requirement::alternatives(&[DataActions::of(actions)]),
        Need::AnyAction => any_action(),
        Need::BulkDelete if super::query::is_hard_delete(query) => {
            all_of(&[A::Delete, A::HardDelete])
        }
        Need::BulkDelete => all_of(&[A::Delete]),
        Need::SearchParameterStatus if verb == Get => all_of(&[A::Read]),
        Need::SearchParameterStatus => all_of(&[A::SearchParameter]),
    })
}

/// The canonical (table) spelling of a known operation, or the name as given, lower-cased.
pub(super) fn canonical_name(name: &str) -> String {
    RULES
        .iter()
        .find(|r| r.name.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_ascii_lowercase(), |r| r.name.to_owned())
}

/// The requirement of an asynchronous-job status (GET) or cancel (DELETE) request,
/// `_operations/<kind>/<id>` (reference §3.2: export, import, reindex, bulk-delete, bulk-update).
/// An unknown kind needs every action, like an unknown operation.
pub(super) fn job_requirement(kind: &str, verb: Verb) -> Requirement {
    match kind {
        "export" => all_of(&[A::Export]),
        "import" => all_of(&[A::Import]),
        "reindex" => all_of(&[A::Reindex]),
        "bulk-delete" if verb == Get => all_of(&[A::Read]),
        "bulk-delete" => all_of(&[A::Delete]),
        "bulk-update" => all_of(&[A::BulkOperator]),
        _ => every_action(),
    }
}

impl At {
    fn admits(self, level: Level<'_>) -> bool {
        match (self, level) {
            (At::System, Level::System) | (At::AnyType, Level::Type(_)) => true,
            (At::AnyInstance, Level::Instance(_)) => true,
            (At::Type(want), Level::Type(got)) | (At::Instance(want), Level::Instance(got)) => {
                want == got
            }
            _ => false,
        }
    }
}

fn all_of(actions: &[DataAction]) -> Requirement {
    Requirement::alternatives(&[DataActions::of(actions)])
}

/// `*`: every data action at once (fail closed for what fhirguard does not know).
pub(super) fn every_action() -> Requirement {
    Requirement::alternatives(&[DataActions::ALL])
}

/// Any single data action (reference §3.2 bundle pre-check: `CheckAccess(All) != None`).
pub(super) fn any_action() -> Requirement {
    Requirement::any_of(&DataAction::ALL)
}
