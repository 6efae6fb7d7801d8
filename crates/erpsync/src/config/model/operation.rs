//! Operations: the named requests of a system, their idempotency keys, decoding and pagination.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::*;

/// A named request on a system. Path, query, headers and body are Handlebars templates over the
/// operation's inputs: `record` (the payload), `id`, `key`, `since`, `idempotency_key`,
/// `system` (the system's vars) and `vars`.
///
/// An operation with `steps` sends several requests instead of one (then `path`, `method`,
/// `query`, `body` and `record` belong to the steps, and `headers`, `errors` and `decode`
/// apply to every step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct OperationConfig {
    /// HTTP method.
    #[serde(default = "default_get")]
    pub method: HttpMethod,
    /// Path relative to the system's `base_url` (template). Required unless the operation
    /// has `steps`.
    #[serde(default)]
    #[schemars(transform = crate::config::schema_doc::operation_path)]
    pub path: String,
    /// Query parameters (templates); a parameter whose value renders empty is left out.
    #[serde(default)]
    #[schemars(transform = crate::config::schema_doc::operation_template)]
    pub query: BTreeMap<String, String>,
    /// Extra headers (templates).
    #[serde(default)]
    #[schemars(transform = crate::config::schema_doc::operation_template)]
    pub headers: BTreeMap<String, String>,
    /// JSON body. String leaves are templates; a leaf that is exactly `{{name}}` keeps the
    /// value's JSON type (a number stays a number, `{{record}}` inserts the whole payload).
    #[serde(default)]
    #[schemars(transform = crate::config::schema_doc::operation_template)]
    pub body: Option<Value>,
    /// How the body is encoded.
    #[serde(default)]
    pub body_format: BodyFormat,
    /// JSONPath to the list of records in a list response, e.g. `$.data`. A path with two
    /// `[*]` or more (`$.data[*].variants[*]`) lists the records of nested lists; each keeps
    /// the element of the `[*]` above its own as its parent, `$parent.…` and
    /// `{{parent.…}}` in read mappings; with three levels, `$parent.parent.…` reads the one
    /// above the parent.
    #[serde(default)]
    pub records: Option<String>,
    /// The API leaves the member `records` reads out of a page when it has nothing to list
    /// (or, for `records: $`, answers an object instead of an empty list). By default a page
    /// without it (`{"message": "…"}` where pages hold `data`; an object where the page is
    /// the list) is an answer of another kind, an error served with a 2xx, and fails the
    /// listing, or the lookup: read as an empty page, it would make every record after it
    /// look missing, and a first sync would create them again. With `true`, such a page
    /// reads as empty.
    #[serde(default)]
    pub absent_means_empty: bool,
    /// JSONPath to the record in a single-record response (lookup, create, update), e.g.
    /// `$.data`. For a lookup, a path that selects nothing means "not found".
    #[serde(default)]
    pub record: Option<String>,
    /// How to fetch the following pages of a list.
    #[serde(default)]
    pub paginate: Option<PaginationConfig>,
    /// Upper bound on pages fetched in one listing; reaching it is an error, not a silent stop.
    #[serde(default = "default_max_pages")]
    pub max_pages: u32,
    /// Where a list response tells how many records the whole listing has: a header name
    /// (`header:X-WP-Total`) or a JSONPath in the body (`$.meta.total`). A run shows it as
    /// its progress total, with the time left; the listing does not depend on it.
    #[serde(default)]
    pub total: Option<String>,
    /// Format of `{{since}}` for incremental lists: `rfc3339` (default), `unix`, or a chrono
    /// format string such as `%Y-%m-%d %H:%M:%S`.
    #[serde(default)]
    pub since_format: Option<String>,
    /// Whether repeating the request is safe. Default: GET, PUT and DELETE are; POST and PATCH
    /// are only when an idempotency key is sent.
    #[serde(default)]
    pub idempotent: Option<bool>,
    /// The API de-duplicates writes by a key: erpsync derives a stable key per flow and record,
    /// offers it as `{{idempotency_key}}` to the templates and, when `header` is set, sends it.
    #[serde(default)]
    pub idempotency_key: Option<IdempotencyKeyConfig>,
    /// Response classification rules tried before the system's.
    #[serde(default)]
    pub errors: Vec<ErrorRuleConfig>,
    /// Rewrite typed JSON objects in the response (e.g. `{"__class__":"Decimal","decimal":"1.5"}`)
    /// into plain values before mapping.
    #[serde(default)]
    pub decode: Vec<DecodeRuleConfig>,
    /// The requests of a multi-step operation, tried in order. Each step's templates read the
    /// operation's inputs and `steps.NAME` of every earlier step that ran: `status`, `body`
    /// (the decoded response) and `record` (what the step's `record` path selects), e.g.
    /// `{{steps.find.record.id}}`. A step without `on` runs whenever the operation goes on;
    /// a step with `on` runs only when its condition holds. A step that fails ends the
    /// operation with its error, unless a later step's `on` names that answer (the
    /// fallback). The operation's result is that of the last step that ran.
    #[serde(default)]
    pub steps: Vec<StepConfig>,
}

/// One request of a multi-step operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct StepConfig {
    /// Name of the step, unique in the operation; later steps read its result as
    /// `steps.NAME`.
    pub name: String,
    /// HTTP method.
    #[serde(default = "default_get")]
    pub method: HttpMethod,
    /// Path relative to the system's `base_url` (template).
    #[schemars(transform = crate::config::schema_doc::step_template)]
    pub path: String,
    /// Query parameters (templates); a parameter whose value renders empty is left out.
    #[serde(default)]
    #[schemars(transform = crate::config::schema_doc::step_template)]
    pub query: BTreeMap<String, String>,
    /// Extra headers (templates), on top of the operation's.
    #[serde(default)]
    #[schemars(transform = crate::config::schema_doc::step_template)]
    pub headers: BTreeMap<String, String>,
    /// JSON body; string leaves are templates, as in an operation's `body`.
    #[serde(default)]
    #[schemars(transform = crate::config::schema_doc::step_template)]
    pub body: Option<Value>,
    /// How the body is encoded.
    #[serde(default)]
    pub body_format: BodyFormat,
    /// JSONPath to the record in the response, offered as `steps.NAME.record`.
    #[serde(default)]
    pub record: Option<String>,
    /// Whether repeating the request is safe. Default: GET, PUT and DELETE are; POST and PATCH
    /// are only when an idempotency key is sent. A step that is not safe to repeat is
    /// journaled: a crash or an unknown outcome never sends it twice blindly.
    #[serde(default)]
    pub idempotent: Option<bool>,
    /// The API de-duplicates this step's writes by a key (see the operation's).
    #[serde(default)]
    pub idempotency_key: Option<IdempotencyKeyConfig>,
    /// Response classification rules tried before the operation's and the system's.
    #[serde(default)]
    pub errors: Vec<ErrorRuleConfig>,
    /// Run the step only when an earlier step answered so (fallbacks such as "create when
    /// the update answered 404").
    #[serde(default)]
    pub on: Option<StepOnConfig>,
    /// Run the step only when this template renders something other than empty, `false`,
    /// `0` or `null`, e.g. `{{record.awb}}`.
    #[serde(default, rename = "if")]
    #[schemars(transform = crate::config::schema_doc::step_template)]
    pub if_: Option<String>,
}

/// When a step runs, by the answer of an earlier one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct StepOnConfig {
    /// The earlier step whose answer decides.
    pub step: String,
    /// Statuses of that step's answer that let this step run: `404`, `"4xx"`, `"400-422"`.
    /// Without `status` (and `when`), this step runs when that step ran and succeeded. A
    /// failed step named here with a matching status does not fail the operation: this step
    /// takes over.
    #[serde(default)]
    pub status: Vec<StatusPattern>,
    /// A JSONPath filter condition on that step's response body, e.g.
    /// `@.code == 'already_exists'` (both `status` and `when` must hold when both are set).
    #[serde(default)]
    pub when: Option<String>,
}

fn default_get() -> HttpMethod {
    HttpMethod::Get
}
fn default_max_pages() -> u32 {
    10_000
}

/// How an idempotency key is sent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct IdempotencyKeyConfig {
    /// Header that carries the key (e.g. `Idempotency-Key`).
    #[serde(default)]
    pub header: Option<String>,
    /// Field of the JSON body that carries the key (dotted for nested fields, e.g.
    /// `idempotencyKey`); set on top of the rendered body.
    #[serde(default)]
    pub field: Option<String>,
}

/// Rewrites JSON objects that carry a type marker into a plain value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DecodeRuleConfig {
    /// Key whose presence marks a typed object, e.g. `__class__`.
    pub marker: String,
    /// Value of the marker this rule handles, e.g. `Decimal`.
    pub equals: String,
    /// Key holding the plain value, e.g. `decimal`.
    pub value: String,
    /// Type the plain value is converted to.
    #[serde(default, rename = "as")]
    pub as_type: Option<FieldType>,
}

/// How to fetch the following pages of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PaginationConfig {
    /// Page numbers: `?page=1`, `?page=2`…
    Page {
        /// Query parameter of the page number.
        #[serde(default = "default_page_param")]
        param: String,
        /// Number of the first page.
        #[serde(default = "default_one")]
        start: u64,
        /// Query parameter of the page size.
        #[serde(default)]
        size_param: Option<String>,
        /// Page size sent and used to detect a short (last) page.
        #[serde(default)]
        size: Option<u64>,
        /// Where the total number of pages is: a header name (`header:X-WP-TotalPages`) or a
        /// JSONPath in the body (`$.meta.pages`). Without it, an empty or short page ends.
        #[serde(default)]
        total_pages: Option<String>,
    },
    /// Offset and limit: `?offset=0&limit=100`, `?offset=100&limit=100`…; a short page ends.
    Offset {
        /// Query parameter of the offset.
        #[serde(default = "default_offset_param")]
        offset_param: String,
        /// Query parameter of the page size.
        #[serde(default = "default_limit_param")]
        limit_param: String,
        /// Page size.
        limit: u64,
    },
    /// A cursor read from the body and sent back as a query parameter.
    Cursor {
        /// JSONPath to the next cursor in the body; absent, null or empty ends.
        cursor_path: String,
        /// Query parameter that carries the cursor.
        param: String,
    },
    /// The `Link: <…>; rel="next"` response header (Shopify, GitHub).
    LinkHeader {},
    /// The next page's URL in the body, e.g. `$.meta.links.next` (MerchantPro).
    NextUrl {
        /// JSONPath to the next URL; absent, null or empty ends.
        path: String,
    },
}

fn default_page_param() -> String {
    "page".into()
}
fn default_offset_param() -> String {
    "offset".into()
}
fn default_limit_param() -> String {
    "limit".into()
}
fn default_one() -> u64 {
    1
}
