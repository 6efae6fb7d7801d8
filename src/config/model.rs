//! The flow-file language: every `…Config` type a YAML flow file can contain.
//!
//! These types only describe; `crate::compile` turns them into runnable values. Every field's
//! `///` doc becomes its description in `schemas/flow.schema.json`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One flow file. A project is a folder of such files; their sections are merged, and a name
/// (system, entity, flow, webhook) may be declared only once across the project.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FileConfig {
    /// Version of the flow-file language. Only `1` exists.
    #[serde(default)]
    pub version: Option<u32>,
    /// Other flow files or folders that belong to this project, relative to this file (e.g.
    /// shared entity definitions and platform systems: `[../common]`).
    #[serde(default)]
    pub include: Vec<String>,
    /// Free values shared by every template of the project, as `{{vars.NAME}}`.
    #[serde(default)]
    pub vars: BTreeMap<String, Value>,
    /// Named HTTP APIs (shops, ERPs). A system can `extends` another to reuse its operations and
    /// mappings, so several shops of the same platform are declared without copy-paste.
    #[serde(default)]
    pub systems: BTreeMap<String, SystemConfig>,
    /// Canonical records: the shape every system's records are mapped to and from, per entity.
    #[serde(default)]
    pub entities: BTreeMap<String, EntityConfig>,
    /// Flows: one entity moving between two systems.
    #[serde(default)]
    pub flows: BTreeMap<String, FlowConfig>,
    /// Where erpsync keeps bindings, cursors, runs and failures.
    #[serde(default)]
    pub state: Option<StateConfig>,
    /// Settings of the long-running daemon (`erpsync run`).
    #[serde(default)]
    pub daemon: Option<DaemonConfig>,
}

// ---------------------------------------------------------------------------------------------
// Systems

/// What a system is in the integration; conflict rules such as `erp_wins` use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SystemRole {
    /// An online shop (MerchantPro, WooCommerce, Shopify…).
    Shop,
    /// An ERP or invoicing system (SmartBill, Oblio, Tryton…).
    Erp,
}

/// A named HTTP/JSON API.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SystemConfig {
    /// Name of another system whose settings, operations and entity mappings this one inherits;
    /// what this system declares overrides what it inherits.
    #[serde(default)]
    pub extends: Option<String>,
    /// A template for other systems: never called itself, so it needs no `base_url`.
    #[serde(default, rename = "abstract")]
    pub is_abstract: bool,
    /// `shop` or `erp`; the conflict rules `shop_wins` and `erp_wins` refer to it.
    #[serde(default)]
    pub role: Option<SystemRole>,
    /// Base URL every operation path is joined to, e.g. `https://shop.example.com/api/v2`.
    /// `${ENV_VAR}`, `${ENV_VAR:-default}` and `${file:/path}` are substituted.
    #[serde(default)]
    pub base_url: Option<String>,
    /// How requests authenticate.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Headers sent with every request (templates).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Connect and request timeouts.
    #[serde(default)]
    pub timeouts: Option<TimeoutsConfig>,
    /// Request budget shared by every flow that uses this system.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// How failed requests that are safe to repeat are retried.
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// When the system is taken as down: after `failures` consecutive requests without any
    /// response (connection refused or reset, timed out), runs stop calling it and end with one
    /// error, and it is probed again with a growing pause. On by default.
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    /// Rules that classify responses, tried in order before the built-in defaults (2xx success,
    /// 429 rate-limited, 5xx retry, other 4xx fail). Some ERPs answer 200 with an error in the
    /// body: a rule with `when` catches it.
    #[serde(default)]
    pub errors: Vec<ErrorRuleConfig>,
    /// Values for this system's templates, as `{{system.NAME}}` (e.g. a company VAT code).
    /// A map here is also a lookup table for this system's mappings, in place of a project
    /// table of the same name: a template system carries its own tables, and a system that
    /// extends it may replace one.
    #[serde(default)]
    pub vars: BTreeMap<String, Value>,
    /// Values only the system knows, such as the database id of a warehouse or of a unit,
    /// looked up once before the system's first request and added to its `vars`
    /// (`{{system.NAME}}`), so flow files name records by code instead of hard-coding ids.
    /// While they are looked up, these names are still empty in templates.
    #[serde(default)]
    pub resolve: BTreeMap<String, ResolveConfig>,
    /// Named requests on this system.
    #[serde(default)]
    pub operations: BTreeMap<String, OperationConfig>,
    /// How each entity lives in this system: which operations read and write it and how its
    /// records map to and from the canonical record.
    #[serde(default)]
    pub entities: BTreeMap<String, SystemEntityConfig>,
}

/// A system value looked up by a request.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ResolveConfig {
    /// Operation of this system that finds the value; it gets no record, id or key.
    pub operation: String,
    /// JSONPath to the value in the response body, e.g. `$[0].id`. Finding nothing fails every
    /// call of the system: a missing id must not become a wrong one.
    pub path: String,
}

/// How requests to a system authenticate. Secrets come from `${ENV_VAR}` or `${file:/path}`
/// and are never printed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// No authentication.
    None,
    /// HTTP Basic authentication.
    Basic {
        /// User name (MerchantPro: the API key; SmartBill: the account e-mail).
        username: String,
        /// Password (MerchantPro: the API secret; SmartBill: the API token).
        password: String,
    },
    /// A fixed bearer token: `Authorization: Bearer TOKEN`.
    Bearer {
        /// The token.
        token: String,
    },
    /// An API key sent in a header or a query parameter.
    ApiKey {
        /// Header or query parameter name.
        name: String,
        /// The key.
        value: String,
        /// Where the key goes.
        #[serde(default, rename = "in")]
        location: ApiKeyLocation,
    },
    /// OAuth2 client credentials: a token is fetched from `token_url` and cached until it
    /// expires.
    #[serde(rename = "oauth2_client_credentials")]
    OAuth2ClientCredentials {
        /// Token endpoint, absolute or relative to `base_url`.
        token_url: String,
        /// Client id.
        client_id: String,
        /// Client secret.
        client_secret: String,
        /// Requested scope.
        #[serde(default)]
        scope: Option<String>,
        /// How the token request body is encoded: `form` (RFC 6749) or `json` (Oblio).
        #[serde(default)]
        body_format: BodyFormat,
    },
    /// A token obtained from a login request, read by JSONPath, refreshed before it expires and
    /// once on a 401.
    Login {
        /// The login request.
        request: LoginRequestConfig,
        /// JSONPath to the token in the login response.
        token_path: String,
        /// JSONPath to the lifetime in seconds in the login response.
        #[serde(default)]
        expires_in_path: Option<String>,
        /// Lifetime assumed when the response does not say, in seconds.
        #[serde(default = "default_token_ttl")]
        default_ttl_secs: u64,
        /// Header that carries the token.
        #[serde(default = "default_auth_header")]
        header: String,
        /// Template of the header value; `{{token}}` is the token.
        #[serde(default = "default_token_format")]
        format: String,
    },
}

fn default_token_ttl() -> u64 {
    3600
}
fn default_auth_header() -> String {
    "Authorization".into()
}
fn default_token_format() -> String {
    "Bearer {{token}}".into()
}

/// Where an API key is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeyLocation {
    /// In a request header.
    #[default]
    Header,
    /// In a query parameter.
    Query,
}

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    /// `application/json`.
    #[default]
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
}

/// The request that obtains a token.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequestConfig {
    /// HTTP method.
    #[serde(default = "default_post")]
    pub method: HttpMethod,
    /// Path (template), relative to `base_url`, or an absolute URL.
    pub path: String,
    /// Body (string leaves are templates).
    #[serde(default)]
    pub body: Option<Value>,
    /// How the body is encoded.
    #[serde(default)]
    pub body_format: BodyFormat,
    /// Extra headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_post() -> HttpMethod {
    HttpMethod::Post
}

/// Timeouts of a system's requests.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// Time to open a connection, in milliseconds.
    #[serde(default = "default_connect_ms")]
    pub connect_ms: u64,
    /// Time for a whole request and its response, in milliseconds.
    #[serde(default = "default_request_ms")]
    pub request_ms: u64,
}

fn default_connect_ms() -> u64 {
    5_000
}
fn default_request_ms() -> u64 {
    30_000
}

/// The circuit breaker of a system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Consecutive requests without a response (refused, reset, timed out) after which the
    /// system is taken as down. Retries count: with `retry.max_attempts: 5`, one call to a
    /// system that refuses connections makes five. A response of any status resets the count.
    #[serde(default = "default_breaker_failures")]
    pub failures: u32,
    /// Seconds before the first probe of a system that is down; each failed probe doubles it.
    #[serde(default = "default_probe_initial_secs")]
    pub probe_initial_secs: u64,
    /// The longest pause between two probes, in seconds.
    #[serde(default = "default_probe_max_secs")]
    pub probe_max_secs: u64,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            failures: default_breaker_failures(),
            probe_initial_secs: default_probe_initial_secs(),
            probe_max_secs: default_probe_max_secs(),
        }
    }
}

fn default_breaker_failures() -> u32 {
    5
}
fn default_probe_initial_secs() -> u64 {
    5
}
fn default_probe_max_secs() -> u64 {
    300
}

/// A token bucket shared by every flow that calls the system.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests that may be sent at once after a quiet period.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Some APIs lock a client out for minutes after a burst (SmartBill: 30 calls in 10 s, then
    /// 10 minutes). When a response matches, every flow waits out the lock-out.
    #[serde(default)]
    pub lockout: Option<LockoutConfig>,
}

fn default_burst() -> u32 {
    1
}

/// A lock-out: the response that signals it and how long it lasts.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct LockoutConfig {
    /// Status code of the lock-out response.
    pub status: u16,
    /// How long to wait when the response carries no `Retry-After`, in seconds.
    pub seconds: u64,
}

/// Retry policy for requests that are safe to repeat.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry, in milliseconds; doubled on each further retry.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff_ms: u64,
    /// Longest wait between two attempts, in milliseconds.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
    /// Randomise each wait (full jitter) so that many clients do not retry in step.
    #[serde(default = "default_true")]
    pub jitter: bool,
}

fn default_attempts() -> u32 {
    4
}
fn default_initial_backoff() -> u64 {
    500
}
fn default_max_backoff() -> u64 {
    30_000
}
pub(crate) fn default_true() -> bool {
    true
}

/// What a classified response means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorAction {
    /// The request succeeded.
    Success,
    /// A passing fault: retry when the request is safe to repeat.
    Retry,
    /// Too many requests: wait (`Retry-After` when given) and retry.
    RateLimited,
    /// A permanent failure: the record goes to the failure store.
    Fail,
    /// The write had already been applied (e.g. a duplicate idempotency key): treat as success.
    AlreadyDone,
    /// The record does not exist.
    NotFound,
}

/// One response classification rule. All given conditions must hold.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ErrorRuleConfig {
    /// Status codes this rule applies to: `200`, `"4xx"`, `"500-599"`. Empty means any status.
    #[serde(default)]
    pub status: Vec<StatusPattern>,
    /// A JSONPath filter condition on the response body, e.g. `@.errorText && @.errorText != ''`.
    #[serde(default)]
    pub when: Option<String>,
    /// What a matching response means.
    pub action: ErrorAction,
    /// Template of the error message, over `body` and `status`, e.g. `{{body.errorText}}`.
    #[serde(default)]
    pub message: Option<String>,
}

/// A status code, a class such as `"5xx"`, or a range such as `"400-499"`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StatusPattern {
    /// One status code.
    Code(u16),
    /// A class (`"4xx"`) or an inclusive range (`"500-504"`).
    Pattern(String),
}

/// HTTP methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
}

/// A named request on a system. Path, query, headers and body are Handlebars templates over the
/// operation's inputs: `record` (the payload), `id`, `key`, `since`, `idempotency_key`,
/// `system` (the system's vars) and `vars`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct OperationConfig {
    /// HTTP method.
    #[serde(default = "default_get")]
    pub method: HttpMethod,
    /// Path relative to the system's `base_url` (template).
    pub path: String,
    /// Query parameters (templates); a parameter whose value renders empty is left out.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Extra headers (templates).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON body. String leaves are templates; a leaf that is exactly `{{name}}` keeps the
    /// value's JSON type (a number stays a number, `{{record}}` inserts the whole payload).
    #[serde(default)]
    pub body: Option<Value>,
    /// How the body is encoded.
    #[serde(default)]
    pub body_format: BodyFormat,
    /// JSONPath to the list of records in a list response, e.g. `$.data`.
    #[serde(default)]
    pub records: Option<String>,
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
}

fn default_get() -> HttpMethod {
    HttpMethod::Get
}
fn default_max_pages() -> u32 {
    10_000
}

/// How an idempotency key is sent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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

/// How one entity lives in a system.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SystemEntityConfig {
    /// JSONPath to the system's own id in one of its records, e.g. `$.id`; or a template over
    /// the record that joins several ids with `/` into a composite id, e.g.
    /// `{{template}}/{{id}}` when updates go to one record and references to another. Operations
    /// get the composite as `{{id}}` (split it with the `part` helper); `ref` picks a part.
    #[serde(default = "default_id_path")]
    pub id: String,
    /// Operation that lists records (incremental with `{{since}}` when it uses it).
    #[serde(default)]
    pub list: Option<String>,
    /// Operation that lists the records changed since `{{since}}`, for APIs where what changes
    /// is found elsewhere than where the records are listed (stock levels found through the
    /// stock moves written since). Incremental runs use it; full reads and reconciliation use
    /// `list`.
    #[serde(default)]
    pub changes: Option<String>,
    /// Operation that finds one record by the match key, `{{key}}`.
    #[serde(default)]
    pub lookup: Option<String>,
    /// Operation that reads one record by id, `{{id}}`.
    #[serde(default)]
    pub get: Option<String>,
    /// Operation that creates a record from `{{record}}`.
    #[serde(default)]
    pub create: Option<String>,
    /// Operation that updates record `{{id}}` from `{{record}}`.
    #[serde(default)]
    pub update: Option<String>,
    /// Named custom actions on one record (`{{id}}`), e.g. `lock: lock_order`; flows call them
    /// as post-actions.
    #[serde(default)]
    pub actions: BTreeMap<String, String>,
    /// Native record → canonical record: one entry per canonical field, evaluated on the
    /// native record (`$` is the native record).
    #[serde(default)]
    pub read: BTreeMap<String, FieldMapConfig>,
    /// Canonical record → native payload for create and update: one entry per native field
    /// (dotted names build nested objects), evaluated on the canonical record.
    #[serde(default)]
    pub write: BTreeMap<String, FieldMapConfig>,
}

fn default_id_path() -> String {
    "$.id".into()
}

/// Where a mapped field's value comes from. A plain string is a shorthand: one that starts
/// with `$` is a JSONPath, any other is a Handlebars template.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum FieldMapConfig {
    /// Shorthand: `$.path` or a template.
    Short(String),
    /// The full form.
    Full(Box<FieldSpecConfig>),
}

impl<'de> Deserialize<'de> for FieldMapConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Hand-written instead of `untagged`, so that a mistake in the full form is reported as
        // itself ("unknown field `tmplate`") and not as "did not match any variant".
        let value = Value::deserialize(d)?;
        match value {
            Value::String(s) => Ok(FieldMapConfig::Short(s)),
            other @ Value::Object(_) => FieldSpecConfig::deserialize(other)
                .map(|f| FieldMapConfig::Full(Box::new(f)))
                .map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!(
                "expected a JSONPath, a template or a field map, found {}",
                json_kind(&other)
            ))),
        }
    }
}

pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// The full form of a mapped field: exactly one of `path`, `template`, `const`, `lookup`, `ref`
/// or `each`, with an optional type and default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldSpecConfig {
    /// JSONPath into the source record.
    #[serde(default)]
    pub path: Option<String>,
    /// Handlebars template over the source record.
    #[serde(default)]
    pub template: Option<String>,
    /// A constant value.
    #[serde(default, rename = "const")]
    pub constant: Option<Value>,
    /// Translate a value through a table of `vars` (e.g. a shop status to an ERP status).
    #[serde(default)]
    pub lookup: Option<LookupConfig>,
    /// The id, in the target system, of a related record erpsync has already synced (e.g. the
    /// ERP id of the order's customer, or of a line's product).
    #[serde(default, rename = "ref")]
    pub reference: Option<RefConfig>,
    /// A list: map every element selected by this JSONPath with `fields`.
    #[serde(default)]
    pub each: Option<String>,
    /// Fields of each element, with `each`.
    #[serde(default)]
    pub fields: Option<BTreeMap<String, FieldMapConfig>>,
    /// Type the value is converted to.
    #[serde(default, rename = "type")]
    pub field_type: Option<FieldType>,
    /// Value used when the source has none (missing or null).
    #[serde(default)]
    pub default: Option<Value>,
}

/// A lookup of a value in a table.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct LookupConfig {
    /// Name of a table in `vars` (an object from keys to values).
    pub table: String,
    /// JSONPath (or template) of the key in the source record.
    pub key: String,
    /// Fail the record when the key is not in the table (otherwise `default` applies).
    #[serde(default)]
    pub required: bool,
}

/// A reference to a related record through erpsync's bindings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RefConfig {
    /// Entity of the related record, e.g. `customer`.
    pub entity: String,
    /// JSONPath (or template) of the related record's match key in the source record.
    pub key: String,
    /// When the related entity has a composite id (an `id` template joining ids with `/`), the
    /// part to use, counted from 0.
    #[serde(default)]
    pub part: Option<usize>,
}

/// Types a mapped or canonical field can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// Text.
    String,
    /// Whole number.
    Integer,
    /// Number.
    Number,
    /// Money or quantity with a fixed number of decimals (see `scale`); compared exactly.
    Decimal,
    /// true / false (also from "1"/"0", "yes"/"no", "on"/"off").
    Boolean,
    /// Date and time, normalised to RFC 3339 UTC.
    Datetime,
    /// Calendar date `YYYY-MM-DD`.
    Date,
    /// Any JSON value, kept as it is.
    Json,
}

// ---------------------------------------------------------------------------------------------
// Canonical entities

/// A canonical record type.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct EntityConfig {
    /// Field that identifies a record across systems (`sku`, `number`, `email`).
    pub key: String,
    /// Field holding the last-modified time, used by `newest_wins`.
    #[serde(default)]
    pub updated_at: Option<String>,
    /// The canonical fields.
    pub fields: BTreeMap<String, CanonicalFieldConfig>,
}

/// A canonical field: a type, or a type with options.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum CanonicalFieldConfig {
    /// Just the type.
    Type(FieldType),
    /// Type and options.
    Full(CanonicalFieldSpecConfig),
}

impl<'de> Deserialize<'de> for CanonicalFieldConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        match value {
            s @ Value::String(_) => FieldType::deserialize(s)
                .map(CanonicalFieldConfig::Type)
                .map_err(serde::de::Error::custom),
            o @ Value::Object(_) => CanonicalFieldSpecConfig::deserialize(o)
                .map(CanonicalFieldConfig::Full)
                .map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!(
                "expected a field type or a field map, found {}",
                json_kind(&other)
            ))),
        }
    }
}

/// A canonical field with options.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CanonicalFieldSpecConfig {
    /// Type of the field.
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// Decimals kept for `decimal` fields.
    #[serde(default)]
    pub scale: Option<u32>,
    /// Normalisation applied before comparing and hashing.
    #[serde(default)]
    pub normalize: Vec<Normalize>,
    /// Left out of change detection (e.g. a timestamp that changes on every read).
    #[serde(default)]
    pub volatile: bool,
}

/// Text normalisations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    /// Remove leading and trailing white space.
    Trim,
    /// Lower case.
    Lowercase,
    /// Upper case.
    Uppercase,
    /// Remove all white space.
    StripSpaces,
    /// Keep digits only (phone numbers, VAT codes).
    DigitsOnly,
    /// Remove leading zeros.
    StripLeadingZeros,
}

// ---------------------------------------------------------------------------------------------
// Flows

/// One entity moving between two systems.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FlowConfig {
    /// What the flow is for, shown by `erpsync status` and the admin API.
    #[serde(default)]
    pub description: Option<String>,
    /// A disabled flow is validated but runs only when named by hand (`run --once --flow`,
    /// `failures retry`): never on its schedule, by a webhook, by `then`, nor through
    /// `requires` (an enabled flow requiring a disabled one is an error).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Canonical entity the flow moves (`product`, `stock`, `order`, `customer`…).
    pub entity: String,
    /// Source system. With `for_each`, `{{each}}` stands for each listed system.
    pub from: String,
    /// Target system. With `for_each`, `{{each}}` stands for each listed system.
    pub to: String,
    /// Run one copy of this flow per listed system (several shops against one ERP); each copy
    /// is named `FLOW.SYSTEM` and keeps its own state and failures.
    #[serde(default)]
    pub for_each: Vec<String>,
    /// `one_way` (from → to) or `bidirectional` (changes on either side propagate).
    #[serde(default)]
    pub direction: Direction,
    /// How records of both sides are paired.
    #[serde(default, rename = "match")]
    pub match_key: Option<MatchConfig>,
    /// What the flow may do to the target.
    #[serde(default)]
    pub mode: SyncMode,
    /// Canonical fields this flow carries; others are ignored (a stock flow carries only
    /// `stock`). Empty means every field the target's `write` mapping uses.
    #[serde(default)]
    pub fields: Vec<String>,
    /// Source fields that are null leave the target's value alone instead of erasing it (a
    /// source that does not know an order's status yet must not reset it).
    #[serde(default)]
    pub skip_nulls: bool,
    /// Source records that do not satisfy this JSONPath filter condition on the canonical
    /// record are left alone, e.g. `@.status != 'cancelled'`.
    #[serde(default)]
    pub filter: Option<String>,
    /// When the flow runs.
    #[serde(default)]
    pub trigger: TriggerConfig,
    /// Incremental reading: only records changed since the last successful run.
    #[serde(default)]
    pub incremental: Option<IncrementalConfig>,
    /// A periodic full comparison that finds and corrects drift the incremental runs missed.
    #[serde(default)]
    pub reconcile: Option<ReconcileConfig>,
    /// What to do when both sides changed the same record (bidirectional flows).
    #[serde(default)]
    pub conflict: Option<ConflictConfig>,
    /// Actions on the source record after the target accepted it, e.g. lock the order in the
    /// shop.
    #[serde(default)]
    pub after_export: Vec<PostActionConfig>,
    /// Keep sending source edits after the record was exported (orders are otherwise locked).
    /// Updates coming back from the target may then overwrite them; runs report each one.
    #[serde(default)]
    pub allow_edit_after_export: bool,
    /// Send each record at most once (orders): later source changes are not sent unless
    /// `allow_edit_after_export` is set.
    #[serde(default)]
    pub export_once: bool,
    /// Flows to run when this one finishes, scoped to the records it touched.
    #[serde(default)]
    pub then: Vec<ChainConfig>,
    /// Flows that run before this one when several run together (`run --once`, the same
    /// scheduler tick), e.g. products before the orders that reference them.
    #[serde(default)]
    pub after: Vec<String>,
    /// Related entities that must be synced before a record of this flow (e.g. an order's
    /// customer), through the named flows.
    #[serde(default)]
    pub requires: Vec<RequireConfig>,
}

/// Direction of a flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From `from` to `to` only.
    #[default]
    OneWay,
    /// Both ways, with a three-way comparison against the last synced state.
    Bidirectional,
}

/// What a flow may do to the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Create records missing in the target and update existing ones.
    #[default]
    Upsert,
    /// Only create records missing in the target.
    Create,
    /// Only update records that exist in the target.
    Update,
    /// Create missing records; never update existing ones (used to adopt a catalogue).
    CreateMissing,
}

/// How the records of both sides are paired.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct MatchConfig {
    /// Canonical field compared; defaults to the entity's `key`.
    #[serde(default)]
    pub key: Option<String>,
    /// Normalisation applied to both sides' keys before comparing.
    #[serde(default)]
    pub normalize: Vec<Normalize>,
}

/// When a flow runs. Several triggers may be combined.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TriggerConfig {
    /// Cron schedule with seconds (`0 */15 * * * *`) or classic five fields (`*/15 * * * *`).
    /// Flows with a schedule are the ones `run --once` without `--flow` runs.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Time zone of the schedule (IANA name); UTC by default.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Only records whose canonical field has one of these values are sent (e.g. orders at
    /// `pending`, or at `confirmed`/`processing`).
    #[serde(default)]
    pub on_status: Option<StatusTriggerConfig>,
    /// Only records that moved from one value to another since erpsync last saw them.
    #[serde(default)]
    pub on_transition: Option<TransitionTriggerConfig>,
    /// Name of a webhook (under `daemon.webhooks`) that runs the flow for the notified record.
    #[serde(default)]
    pub webhook: Option<String>,
    /// Says that the flow is run by hand. Every flow can be (`run --once --flow`, the admin
    /// API); a flow without `schedule` runs only that way, or when another flow requires or
    /// chains it, or its webhook arrives — never by `run --once` without `--flow`.
    #[serde(default = "default_true")]
    pub manual: bool,
}

/// A status-set trigger.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct StatusTriggerConfig {
    /// Canonical field holding the status.
    #[serde(default = "default_status_field")]
    pub field: String,
    /// Values that make a record eligible.
    #[serde(rename = "in")]
    pub values: Vec<String>,
}

fn default_status_field() -> String {
    "status".into()
}

/// A status-transition trigger; fires once per transition.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TransitionTriggerConfig {
    /// Canonical field holding the status.
    #[serde(default = "default_status_field")]
    pub field: String,
    /// Previous values (empty: any).
    #[serde(default)]
    pub from: Vec<String>,
    /// New values.
    pub to: Vec<String>,
}

/// Incremental reading settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct IncrementalConfig {
    /// Where the first run starts (RFC 3339 or `YYYY-MM-DD`).
    pub start: String,
    /// Seconds subtracted from the cursor on each run, to catch records written while the
    /// previous run was reading.
    #[serde(default = "default_overlap")]
    pub overlap_secs: u64,
}

fn default_overlap() -> u64 {
    60
}

/// Reconciliation settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// Cron schedule of the full comparison.
    pub schedule: String,
    /// Correct the drift found (otherwise only report it).
    #[serde(default = "default_true")]
    pub correct: bool,
}

/// Conflict handling for bidirectional flows.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ConflictConfig {
    /// Rule for fields without an owner.
    pub rule: ConflictRule,
    /// Canonical timestamp field compared by `newest_wins` (defaults to the entity's
    /// `updated_at`).
    #[serde(default)]
    pub timestamp_field: Option<String>,
    /// Per-field owner: the named system's value always wins for that field.
    #[serde(default)]
    pub owners: BTreeMap<String, String>,
}

/// Conflict rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConflictRule {
    /// The ERP's value wins.
    ErpWins,
    /// The shop's value wins.
    ShopWins,
    /// The side with the later timestamp wins.
    NewestWins,
    /// Only per-field owners decide; a conflict on a field without owner is parked.
    Owner,
    /// Park the record for review; nothing is written until it is resolved.
    Park,
}

/// An action called on the source record after the target accepted it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PostActionConfig {
    /// Name of an action of the source system's entity (e.g. `lock`).
    pub action: String,
}

/// A flow run when this one finishes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ChainConfig {
    /// Flow to run.
    pub flow: String,
    /// JSONPath into each touched canonical record that gives the keys the chained flow is
    /// limited to, e.g. `$.lines[*].sku`; without it the chained flow runs in full.
    #[serde(default)]
    pub keys: Option<String>,
}

/// A related record that must exist in the target before this one is sent.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RequireConfig {
    /// Flow that syncs the related entity.
    pub flow: String,
    /// JSONPath into this flow's canonical record that gives the related record, whose match
    /// key that flow uses (e.g. `$.customer`).
    pub record: String,
}

// ---------------------------------------------------------------------------------------------
// State and daemon

/// Where state is kept.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct StateConfig {
    /// `sqlite:PATH` (default `sqlite:erpsync.sqlite`, relative to the flow folder), or
    /// `postgres://USER@HOST/DB?schema=NAME` for state shared by several nodes (keep a
    /// password out of the file: `postgres://erp:${PG_PASSWORD}@db/erpsync`).
    pub url: String,
}

/// Daemon settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Address of the HTTP server (webhooks, admin API, metrics), e.g. `127.0.0.1:8700`.
    #[serde(default)]
    pub listen: Option<String>,
    /// Bearer token the admin API and the console require; it may do everything (run,
    /// switch flows, retry, discard, settle).
    #[serde(default)]
    pub admin_token: Option<String>,
    /// Bearer token of read-only access to the admin API and the console: it sees
    /// everything the admin token sees and changes nothing.
    #[serde(default)]
    pub viewer_token: Option<String>,
    /// Address the console is reached at from outside, for the links in notifications
    /// (default `http://LISTEN`), e.g. `https://sync.example.com`.
    #[serde(default)]
    pub console_url: Option<String>,
    /// Seconds in-flight work may take to finish after SIGTERM.
    #[serde(default)]
    pub shutdown_grace_secs: Option<u64>,
    /// This node's label in leases, runs and logs, when several daemons share a PostgreSQL
    /// state (default: the host name). Leases belong to the process, so two nodes with one
    /// label never run a flow together, but each node should have its own: a label in use
    /// by another live process is reported.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Seconds a flow's lease lasts unless renewed (default 30). A running flow renews it
    /// every third of this; a node that dies frees its flows after this long (at once when
    /// the dead process was on the same host). A run stops writing when it could not renew
    /// its lease for five sixths of this.
    #[serde(default)]
    pub lease_ttl_secs: Option<u64>,
    /// Days finished runs stay in the run history of the state database (default 30; 0
    /// keeps them for ever). The daemon prunes older ones every hour.
    #[serde(default)]
    pub retention_days: Option<u64>,
    /// Incoming webhooks.
    #[serde(default)]
    pub webhooks: BTreeMap<String, WebhookConfig>,
    /// Notifications when a sync needs a person: channels, and rules that send to them.
    #[serde(default)]
    pub notify: Option<NotifyConfig>,
}

/// Where notifications go and when they are sent. Each rule sends at most one message per
/// window (`window_secs`); what fires meanwhile goes out as one summary when the window ends.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Named channels.
    #[serde(default)]
    pub channels: BTreeMap<String, NotifyChannelConfig>,
    /// Named rules: what fires a notification, and which channels get it.
    #[serde(default)]
    pub rules: BTreeMap<String, NotifyRuleConfig>,
}

/// Kind of a notification channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotifyChannelKind {
    /// A JSON POST to `url`, signed with `secret` when one is given.
    Webhook,
    /// A Slack incoming webhook at `url`.
    Slack,
    /// Email over SMTP (`smtp`, `from`, `to`).
    Email,
}

/// How an email channel secures its SMTP connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS; a server that does not offer it gets nothing.
    #[default]
    Starttls,
    /// No encryption: only for a relay on the same host or a test sink.
    None,
}

/// A notification channel.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct NotifyChannelConfig {
    /// `webhook`, `slack` or `email`.
    pub kind: NotifyChannelKind,
    /// `webhook` and `slack`: where to POST. A Slack URL is a secret: write it as `${VAR}`.
    #[serde(default)]
    pub url: Option<String>,
    /// `webhook`: shared secret; the body's HMAC-SHA256 is sent, hex, in
    /// `X-Erpsync-Signature: sha256=…`.
    #[serde(default)]
    pub secret: Option<String>,
    /// `email`: the SMTP server, `HOST:PORT` (port 587 when left out).
    #[serde(default)]
    pub smtp: Option<String>,
    /// `email`: `starttls` (default) or `none`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// `email`: SMTP user name, when the server wants a login.
    #[serde(default)]
    pub username: Option<String>,
    /// `email`: SMTP password (write it as `${VAR}`).
    #[serde(default)]
    pub password: Option<String>,
    /// `email`: sender address.
    #[serde(default)]
    pub from: Option<String>,
    /// `email`: recipients.
    #[serde(default)]
    pub to: Vec<String>,
}

/// What fires a notification rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotifyOn {
    /// A record failed (a new failure, or a kept one failing again).
    RecordFailed,
    /// At least `count` failures within `within_secs`.
    Failures,
    /// A system's circuit breaker took it as down (requests in a row got no response).
    SystemDown,
    /// A system that was down answers again (a probe or a run got a response).
    SystemUp,
    /// A write of unknown outcome has waited for a person longer than `after_secs`.
    WriteInDoubt,
    /// A flow has not had a successful run for `after_secs`.
    FlowNotSucceeded,
}

/// A notification rule.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct NotifyRuleConfig {
    /// What fires it.
    pub on: NotifyOn,
    /// Channels that get its messages.
    pub to: Vec<String>,
    /// Only these flows (all when empty).
    #[serde(default)]
    pub flows: Vec<String>,
    /// `failures`: how many failures fire it.
    #[serde(default)]
    pub count: Option<u32>,
    /// `failures`: the span they are counted over, in seconds (default: `window_secs`).
    #[serde(default)]
    pub within_secs: Option<u64>,
    /// `write_in_doubt`, `flow_not_succeeded`: how long, in seconds (default 3600).
    #[serde(default)]
    pub after_secs: Option<u64>,
    /// At most one message per this many seconds (default 900); what fires meanwhile is
    /// summed up in the next one.
    #[serde(default)]
    pub window_secs: Option<u64>,
}

/// An incoming webhook endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct WebhookConfig {
    /// URL path, e.g. `/hooks/shop-orders`.
    pub path: String,
    /// Shared secret of the HMAC signature.
    pub secret: String,
    /// Header with the base64 HMAC-SHA256 of the raw body.
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    /// Header with a delivery id used to drop repeated deliveries.
    #[serde(default)]
    pub delivery_id_header: Option<String>,
    /// The record's match key in the payload: a JSONPath (`$.number`), or a template when the
    /// key is built (`WC-{{number}}`).
    pub key: String,
    /// JSONPath to the event time in the payload; deliveries older than `max_age_secs` are
    /// refused as replays.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Oldest accepted delivery, in seconds.
    #[serde(default = "default_max_age")]
    pub max_age_secs: u64,
}

fn default_signature_header() -> String {
    "X-Webhook-Signature".into()
}
fn default_max_age() -> u64 {
    300
}
