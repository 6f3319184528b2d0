//! FHIR request classification: from method, normalized path, query and headers to the FHIR
//! interaction, its resource type, id, version, compartment or operation, and the data actions it
//! requires (reference §3.2, SPEC §4 step 8). Pure: no I/O. Batch and transaction bodies are
//! classified entry by entry in [`bundle`]; paths are made canonical by [`path`] first.
//!
//! Routes (relative to the FHIR base; R4 RESTful API, hl7.org/fhir/R4/http.html):
//!
//! ```text
//! /                      GET search-system (also ?_type=…)   POST batch-transaction
//! /metadata              GET capabilities
//! /_history              GET history-system                  /_search  POST search-system
//! /$op                   system-level operation              /_operations/<kind>/<id>  GET status, DELETE cancel
//! /T                     GET search-type   POST create (If-None-Exist: conditional-create)
//!                        PUT/PATCH/DELETE with a query: conditional-update/-patch/-delete
//! /T/_search  POST search-type     /T/_history  GET history-type     /T/$op  type-level operation
//! /T/id                  GET read   PUT update   PATCH patch   DELETE delete
//! /T/id/_history         GET history-instance    /T/id/_history/vid  GET vread
//! /T/id/$op              instance-level operation
//! /C/id/T  /C/id/*       GET (or POST …/_search) search-compartment, C a compartment type
//! ```
//!
//! HEAD is classified as GET. Method-override headers are refused: the upstream might honour
//! them and run a method other than the one authorized.

pub mod bundle;
pub mod compartment;
pub mod format;
pub mod json;
mod operation;
pub mod patch;
pub mod path;
pub mod query;
pub mod reference;
pub mod resource_types;
mod route;
#[cfg(test)]
mod tests;

use std::fmt;

use http::{HeaderMap, Method};

use crate::actions::{DataAction, DataActions, Requirement};
use route::Route;

/// A FHIR RESTful interaction (R4 http.html), with fhirguard's names for the OSS job endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interaction {
    /// `GET /metadata`: the server's `CapabilityStatement`.
    Capabilities,
    /// `GET T/id`: the current version of one resource.
    Read,
    /// `GET T/id/_history/vid`: one version of a resource.
    Vread,
    /// `GET T?…` or `POST T/_search`: a search over one type.
    SearchType,
    /// `GET /?…` (also with `_type`) or `POST /_search`: a search across types.
    SearchSystem,
    /// `GET C/id/T` or `C/id/*` (or `POST …/_search`): a search inside a compartment.
    SearchCompartment,
    /// `GET T/id/_history`: every version of one resource.
    HistoryInstance,
    /// `GET T/_history`: the changes to every resource of a type.
    HistoryType,
    /// `GET /_history`: the changes to every resource on the server.
    HistorySystem,
    /// `POST T`: a new resource with a server-assigned id.
    Create,
    /// `POST T` with `If-None-Exist`: create unless the search criteria match.
    ConditionalCreate,
    /// `PUT T/id`: replace (or create at) one resource.
    Update,
    /// `PUT T?…`: update the resource the search criteria match.
    ConditionalUpdate,
    /// `PATCH T/id`: a partial change to one resource.
    Patch,
    /// `PATCH T?…`: patch the resource the search criteria match.
    ConditionalPatch,
    /// `DELETE T/id`: delete one resource (hard with `hardDelete=true`).
    Delete,
    /// `DELETE T?…`: delete the resources the search criteria match.
    ConditionalDelete,
    /// `POST /`: a batch or a transaction; the body decides which ([`bundle::classify_bundle`]).
    Bundle,
    /// `$name` at system, type or instance level.
    Operation,
    /// `GET` (status) or `DELETE` (cancel) of an asynchronous job, `_operations/<kind>/<id>`.
    OperationStatus,
}

impl Interaction {
    /// A stable lower-case name, used in logs, metrics and messages.
    pub fn name(self) -> &'static str {
        match self {
            Interaction::Capabilities => "capabilities",
            Interaction::Read => "read",
            Interaction::Vread => "vread",
            Interaction::SearchType => "search-type",
            Interaction::SearchSystem => "search-system",
            Interaction::SearchCompartment => "search-compartment",
            Interaction::HistoryInstance => "history-instance",
            Interaction::HistoryType => "history-type",
            Interaction::HistorySystem => "history-system",
            Interaction::Create => "create",
            Interaction::ConditionalCreate => "conditional-create",
            Interaction::Update => "update",
            Interaction::ConditionalUpdate => "conditional-update",
            Interaction::Patch => "patch",
            Interaction::ConditionalPatch => "conditional-patch",
            Interaction::Delete => "delete",
            Interaction::ConditionalDelete => "conditional-delete",
            Interaction::Bundle => "batch-transaction",
            Interaction::Operation => "operation",
            Interaction::OperationStatus => "operation-status",
        }
    }

    /// `POST /`: the body must be read and classified entry by entry.
    pub fn is_bundle(self) -> bool {
        self == Interaction::Bundle
    }

    /// A search of any kind (type, system, compartment).
    pub fn is_search(self) -> bool {
        matches!(
            self,
            Interaction::SearchType | Interaction::SearchSystem | Interaction::SearchCompartment
        )
    }

    /// Creates and updates, conditional or not, and patches: the interactions that store a
    /// resource body.
    fn stores(self) -> bool {
        matches!(
            self,
            Interaction::Create
                | Interaction::ConditionalCreate
                | Interaction::Update
                | Interaction::ConditionalUpdate
                | Interaction::Patch
                | Interaction::ConditionalPatch
        )
    }
}

impl fmt::Display for Interaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A classified request: what it does, to what, and the data actions it requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FhirRequest {
    /// The FHIR interaction the method and path name.
    pub interaction: Interaction,
    /// The resource type acted on: the path's type, or the target type of a compartment search
    /// (`None` for `Patient/1/*`, system-level interactions and job endpoints).
    pub resource_type: Option<String>,
    /// The resource id (instance interactions) or the job id (`_operations/<kind>/<id>`).
    pub id: Option<String>,
    /// The version id of a vread.
    pub version: Option<String>,
    /// The compartment of a compartment search: (`Patient`, `1`) for `Patient/1/Observation`.
    pub compartment: Option<(String, String)>,
    /// The operation name without `$` (canonical spelling for known operations, lower-cased
    /// otherwise), or the job kind of `_operations/<kind>/<id>`.
    pub operation: Option<String>,
    /// The data actions the request needs (reference §3.2), with the extras: `HardDelete` for a
    /// hard delete, `EditProfileDefinitions` for a change to a profile type, `Reindex` for a
    /// create or update of a `SearchParameter`.
    pub required: Requirement,
    /// The raw query string, if any (a bundle entry's URL query; SMART checks read it).
    pub query: Option<String>,
}

impl fmt::Display for FhirRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.interaction)?;
        let mut parts: Vec<&str> = Vec::new();
        if let Some((owner_type, owner_id)) = &self.compartment {
            parts.extend([owner_type.as_str(), owner_id.as_str()]);
            parts.push(self.resource_type.as_deref().unwrap_or("*"));
        } else if self.interaction == Interaction::OperationStatus {
            parts.push("_operations");
            parts.extend(self.operation.as_deref());
            parts.extend(self.id.as_deref());
        } else {
            parts.extend(self.resource_type.as_deref());
            parts.extend(self.id.as_deref());
            if let Some(version) = &self.version {
                parts.extend(["_history", version.as_str()]);
            }
        }
        let operation = match (&self.operation, self.interaction) {
            (Some(name), Interaction::Operation) => format!("${name}"),
            _ => String::new(),
        };
        if !operation.is_empty() {
            parts.push(&operation);
        }
        if !parts.is_empty() {
            write!(f, " {}", parts.join("/"))?;
        }
        Ok(())
    }
}

/// Why a request could not be classified. Each message is fit for an OperationOutcome
/// `diagnostics`; the error's answer (`error.rs`) gives the status and issue code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    /// A method other than GET, HEAD, POST, PUT, PATCH and DELETE, the methods of the FHIR
    /// REST API.
    #[error("The HTTP method {0} is not supported.")]
    UnsupportedMethod(String),
    /// A path segment in a resource-type position that is not an R4 resource type.
    #[error("Resource type '{0}' is not supported.")]
    UnknownResourceType(String),
    /// A path of no R4 route: too many segments, `_history` misplaced, or a compartment
    /// search under a type that is not a compartment type.
    #[error("No FHIR interaction is defined for the path '{0}'.")]
    UnknownRoute(String),
    /// A known operation invoked at a level or on a type where it is not defined (`$export`
    /// on an Observation, `$purge-history` on a type).
    #[error("The operation ${operation} is not supported on '{path}'.")]
    OperationNotSupported {
        /// The operation name, without `$`.
        operation: String,
        /// The normalized request path.
        path: String,
    },
    /// A method the route or operation does not take (`POST T/id`, `PUT T` without search
    /// criteria, `GET …/$import`).
    #[error("The method {method} is not allowed for '{path}'.")]
    MethodNotAllowed {
        /// The request method.
        method: String,
        /// The normalized request path.
        path: String,
    },
    /// An id or version id that is not of the R4 `id` shape.
    #[error("'{0}' is not a valid FHIR id ([A-Za-z0-9-.], at most 64 characters).")]
    InvalidId(String),
}

/// The media type of FHIR JSON (R4 §3.1.0.1.3): every body fhirguard writes itself, and the
/// format it asks for when it must read an answer.
pub const FHIR_JSON: &str = "application/fhir+json";

/// Resource types whose create, update, patch and delete also need EditProfileDefinitions
/// (reference §3.2, `ProfileResourcesBehaviour`): the OSS server's profile types,
/// `ServerProvideProfileValidation._supportedTypes` = ValueSet, StructureDefinition, CodeSystem.
pub const PROFILE_TYPES: [&str; 3] = ["CodeSystem", "StructureDefinition", "ValueSet"];

/// The request methods fhirguard classifies (HEAD is GET).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Verb {
    fn from_method(method: &Method) -> Result<Verb, ClassifyError> {
        Ok(match *method {
            Method::GET | Method::HEAD => Verb::Get,
            Method::POST => Verb::Post,
            Method::PUT => Verb::Put,
            Method::PATCH => Verb::Patch,
            Method::DELETE => Verb::Delete,
            _ => return Err(ClassifyError::UnsupportedMethod(method.to_string())),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Put => "PUT",
            Verb::Patch => "PATCH",
            Verb::Delete => "DELETE",
        }
    }
}

/// Classifies a request. `path` is the normalized path relative to the FHIR base
/// ([`path::normalize_path`]); `query` the raw query string, if any.
pub fn classify(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<FhirRequest, ClassifyError> {
    let verb = Verb::from_method(method)?;
    let route = Route::parse(path)?;
    let not_allowed = || ClassifyError::MethodNotAllowed {
        method: method.to_string(),
        path: path.to_owned(),
    };
    let conditional = query::has_parameters(query);
    let mut request = FhirRequest {
        interaction: Interaction::Read,
        resource_type: None,
        id: None,
        version: None,
        compartment: None,
        operation: None,
        required: Requirement::default(),
        query: query.map(str::to_owned),
    };
    let interaction = match (route, verb) {
        (Route::Root, Verb::Get) => Interaction::SearchSystem,
        (Route::Root, Verb::Post) => Interaction::Bundle,
        (Route::Metadata, Verb::Get) => Interaction::Capabilities,
        (Route::SystemHistory, Verb::Get) => Interaction::HistorySystem,
        (Route::SystemSearch, Verb::Post) => Interaction::SearchSystem,
        (Route::Job { kind, id }, Verb::Get | Verb::Delete) => {
            request.operation = Some(kind.to_owned());
            request.id = Some(id.to_owned());
            request.required = operation::job_requirement(kind, verb);
            Interaction::OperationStatus
        }
        (Route::Operation { name, level }, _) => {
            request.required = operation::requirement(name, level.operation(), verb, query, path)?;
            request.operation = Some(operation::canonical_name(name));
            request.resource_type = level.resource_type().map(str::to_owned);
            request.id = level.id().map(str::to_owned);
            Interaction::Operation
        }
        (Route::Type(t), verb) => {
            request.resource_type = Some(t.to_owned());
            match verb {
                Verb::Get => Interaction::SearchType,
                Verb::Post if headers.contains_key("if-none-exist") => {
                    Interaction::ConditionalCreate
                }
                Verb::Post => Interaction::Create,
                Verb::Put if conditional => Interaction::ConditionalUpdate,
                Verb::Patch if conditional => Interaction::ConditionalPatch,
                Verb::Delete if conditional => Interaction::ConditionalDelete,
                Verb::Put | Verb::Patch | Verb::Delete => return Err(not_allowed()),
            }
        }
        (Route::TypeSearch(t), Verb::Post) => {
            request.resource_type = Some(t.to_owned());
            Interaction::SearchType
        }
        (Route::TypeHistory(t), Verb::Get) => {
            request.resource_type = Some(t.to_owned());
            Interaction::HistoryType
        }
        (Route::Instance(t, id), verb) => {
            request.resource_type = Some(t.to_owned());
            request.id = Some(id.to_owned());
            match verb {
                Verb::Get => Interaction::Read,
                Verb::Put => Interaction::Update,
                Verb::Patch => Interaction::Patch,
                Verb::Delete => Interaction::Delete,
                Verb::Post => return Err(not_allowed()),
            }
        }
        (Route::InstanceHistory(t, id), Verb::Get) => {
            request.resource_type = Some(t.to_owned());
            request.id = Some(id.to_owned());
            Interaction::HistoryInstance
        }
        (Route::Version(t, id, version), Verb::Get) => {
            request.resource_type = Some(t.to_owned());
            request.id = Some(id.to_owned());
            request.version = Some(version.to_owned());
            Interaction::Vread
        }
        (
            Route::Compartment {
                owner,
                id,
                target,
                post_search,
            },
            verb,
        ) if verb == if post_search { Verb::Post } else { Verb::Get } => {
            request.compartment = Some((owner.to_owned(), id.to_owned()));
            request.resource_type = target.map(str::to_owned);
            Interaction::SearchCompartment
        }
        _ => return Err(not_allowed()),
    };
    request.interaction = interaction;
    if !matches!(
        interaction,
        Interaction::Operation | Interaction::OperationStatus
    ) {
        request.required = requirement(interaction, request.resource_type.as_deref(), query);
    }
    Ok(request)
}

/// The requirement of a non-operation interaction (reference §3.2).
fn requirement(
    interaction: Interaction,
    resource_type: Option<&str>,
    query: Option<&str>,
) -> Requirement {
    use DataAction::{Create, Delete, HardDelete, Read, ReadById, Search, Update, Write};
    let both = |a, b| DataActions::of(&[a, b]);
    let required = match interaction {
        Interaction::Capabilities | Interaction::Bundle => operation::any_action(),
        Interaction::Read | Interaction::Vread => Requirement::any_of(&[Read, ReadById]),
        Interaction::SearchType
        | Interaction::SearchSystem
        | Interaction::SearchCompartment
        | Interaction::HistoryInstance
        | Interaction::HistoryType
        | Interaction::HistorySystem => Requirement::any_of(&[Read, Search]),
        Interaction::Create => Requirement::any_of(&[Write, Create]),
        Interaction::ConditionalCreate => {
            Requirement::alternatives(&[both(Read, Write), both(Search, Create)])
        }
        Interaction::Update => Requirement::any_of(&[Write, Update]),
        Interaction::ConditionalUpdate | Interaction::ConditionalPatch => {
            Requirement::alternatives(&[both(Read, Write), both(Search, Update)])
        }
        Interaction::Patch => {
            Requirement::alternatives(&[both(Read, Write), DataActions::of(&[Update])])
        }
        Interaction::Delete => Requirement::any_of(&[Delete]),
        Interaction::ConditionalDelete => {
            Requirement::alternatives(&[both(Delete, Read), both(Search, Delete)])
        }
        // Computed by the operation table.
        Interaction::Operation | Interaction::OperationStatus => operation::every_action(),
    };
    let deletes = matches!(
        interaction,
        Interaction::Delete | Interaction::ConditionalDelete
    );
    let mut required = required;
    if deletes && query::is_hard_delete(query) {
        required = required.and(HardDelete);
    }
    if let Some(t) = resource_type {
        if (deletes || interaction.stores()) && PROFILE_TYPES.contains(&t) {
            required = required.and(DataAction::EditProfileDefinitions);
        }
        // `SearchParameterValidator` checks Reindex on every create or update of a
        // SearchParameter resource (reference §3.2).
        if interaction.stores() && t == "SearchParameter" {
            required = required.and(DataAction::Reindex);
        }
    }
    required
}
