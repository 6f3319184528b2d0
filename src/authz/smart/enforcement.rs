//! Why carrying out a SMART plan refuses a request (reference §4.7, §8 rule 20; compartment
//! hardening classes 5, 8 and 9), and why an answer fhirguard had to check could not be. Each
//! variant is one rule; [`crate::error`] gives each its status, code and outcome.

use http::StatusCode;

use super::FhirUser;
use crate::fhir::json::JsonError;
use crate::fhir::patch::PatchError;

/// The rule a write names (`writes stay in the compartment`, `patches stay …`).
const WRITES: &str = "compartment hardening: writes stay in the compartment";
const PATCHES: &str = "compartment hardening: patches stay in the compartment";

/// A refusal while carrying out a SMART plan.
#[derive(Debug, thiserror::Error)]
pub enum Enforcement {
    /// 403: what a write would store is outside the compartment.
    #[error("{what} is outside the compartment of {user} ({WRITES})")]
    WriteOutside {
        /// What was checked: the resource in the body, or the patched resource.
        what: &'static str,
        /// The compartment owner.
        user: FhirUser,
    },
    /// 403: a compartment element spelled in another case, which fhirguard cannot check.
    #[error(
        "{what} holds '{name}', a case variant of a compartment element that fhirguard \
         cannot check ({WRITES})"
    )]
    CaseVariant {
        /// What was checked: the resource in the body, or the patched resource.
        what: &'static str,
        /// The member as spelled in the resource (`Subject`, `participant.Actor`).
        name: String,
    },
    /// 403: a reference anywhere in the resource may name another patient (another id, another
    /// server's, or a spelling that is not canonical; issue 20).
    #[error(
        "{what} holds '{other}', which is or may be read as another {} than {user} ({WRITES}; \
         references to the compartment's owner type must be canonical)",
        user.owner.name()
    )]
    ForeignReference {
        /// What was checked: the resource in the body, or the patched resource.
        what: &'static str,
        /// The reference that may name someone else, as written.
        other: String,
        /// The compartment owner.
        user: FhirUser,
    },
    /// 403: a patch fhirguard cannot evaluate (FHIRPath Patch, anything but a JSON Patch).
    #[error(
        "a patch under a patient context must be a JSON Patch ({}); fhirguard cannot evaluate \
         '{media_type}' ({PATCHES})",
        crate::fhir::patch::JSON_PATCH
    )]
    NotJsonPatch {
        /// The request's `Content-Type`, without parameters.
        media_type: String,
    },
    /// 403: the JSON Patch does not apply to the stored resource.
    #[error(
        "{error}; fhirguard cannot show the patched resource stays in the compartment of \
         {user} ({PATCHES})"
    )]
    PatchNotApplicable {
        /// Why the patch does not apply (RFC 6902 §5).
        error: PatchError,
        /// The compartment owner.
        user: FhirUser,
    },
    /// 403: the patch changes what it patches.
    #[error("the patch changes the resource's type or id ({PATCHES})")]
    PatchChangesIdentity,
    /// 400: the JSON Patch is not (strict) JSON.
    #[error("The JSON Patch is refused: {0}")]
    PatchNotJson(JsonError),
    /// 400: a create or update body that is not (strict) JSON.
    #[error("The request body is refused: {0}")]
    BodyNotJson(JsonError),
    /// 400: a create or update body of another type than the URL's.
    #[error("The resource type in the body does not match the URL.")]
    BodyTypeMismatch,
    /// 400: a conditional create needs exactly one `If-None-Exist`.
    #[error("A conditional create takes exactly one If-None-Exist header.")]
    IfNoneExistCount,
    /// 400: an `If-None-Exist` that is not visible ASCII, so not readable as search criteria.
    #[error("The If-None-Exist header is not ASCII.")]
    IfNoneExistNotAscii,
    /// 400: the confined `If-None-Exist` is not a valid header value.
    #[error("The If-None-Exist header is not valid.")]
    IfNoneExistInvalid,
    /// 400: a `POST …/_search` form fhirguard cannot read as the server would.
    #[error("The _search form body is not UTF-8.")]
    FormNotUtf8,
    /// 400: a `_search` form body with another content type (R4 http.html#search).
    #[error(
        "A POST _search body must be application/x-www-form-urlencoded (FHIR R4 \
         http.html#search)."
    )]
    FormNotUrlencoded,
    /// 400: the URL's query and the form body, joined, are not a valid query string
    /// (RFC 3986 §3.4).
    #[error("The _search parameters are not a valid query.")]
    FormNotQuery,
    /// 404: the stored resource a change or history needs is absent or another patient's:
    /// alike, so that neither is told from the other.
    #[error("{request}: the resource is not in the compartment of {user}")]
    StoredOutside {
        /// The request, as [`crate::fhir::FhirRequest`] displays it.
        request: String,
        /// The compartment owner.
        user: FhirUser,
    },
    /// 404: the answer is a resource outside the compartment (reference §4.7).
    #[error("the resource is outside the compartment of {user}")]
    AnswerOutside {
        /// The compartment owner.
        user: FhirUser,
    },
    /// 404: the answer is outside what the scopes grant.
    #[error("the answer is outside the grant")]
    AnswerOutsideGrant,
    /// 404: a 304/412 that would confirm a resource fhirguard cannot see (hardening class 5).
    #[error(
        "the upstream answered {status}, which fhirguard cannot check against the compartment \
         of {user} (compartment hardening: conditional reads)"
    )]
    ConditionalAnswer {
        /// The upstream's status: 304 Not Modified or 412 Precondition Failed.
        status: StatusCode,
        /// The compartment owner.
        user: FhirUser,
    },
    /// 502: an answer fhirguard must check, and cannot.
    #[error("the FHIR server's response could not be checked: {0}")]
    Unverifiable(#[from] AnswerError),
}

/// Why an answer fhirguard must check could not be checked (502).
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// The upstream's body could not be read to its end.
    #[error("{0}")]
    Read(Box<dyn std::error::Error + Send + Sync>),
    /// The body is over the buffering limit (`limits.max_bundle_bytes`).
    #[error("the answer is larger than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body is not strict FHIR JSON.
    #[error("not FHIR JSON: {0}")]
    NotJson(JsonError),
    /// The read of the stored resource, before a change, failed with a status other than
    /// 404/410.
    #[error("reading the current resource answered {0}")]
    StoredRead(StatusCode),
    /// The read of the stored resource could not be built as an HTTP request.
    #[error("{0}")]
    Request(http::Error),
}
