//! Systems: what a named HTTP API is, how it authenticates, its limits, timeouts, retries and error rules.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::*;

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
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
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
    #[schemars(transform = crate::config::schema_doc::operation_template)]
    pub headers: BTreeMap<String, String>,
    /// Connect and request timeouts.
    #[serde(default)]
    pub timeouts: Option<TimeoutsConfig>,
    /// Request budget shared by every flow that uses this system.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Updates one run sends to this system at once (1 to 64), each still within
    /// `rate_limit`. The default, 1, sends one write after another in the order the records
    /// are read. With more, a one-way flow sends the updates of the records it reads without
    /// waiting for the answer to the one before (each record is still decided, bound and
    /// reported on its own, and an update of a record waits for the last one of that record);
    /// creates, multi-step updates that are journaled, updates whose write mapping reads the
    /// target, and both-ways flows still go one at a time.
    #[serde(default)]
    pub concurrency: Option<u32>,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct LockoutConfig {
    /// Status code of the lock-out response.
    pub status: u16,
    /// How long to wait when the response carries no `Retry-After`, in seconds.
    pub seconds: u64,
}

/// Retry policy for requests that are safe to repeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    #[schemars(transform = crate::config::schema_doc::error_message)]
    pub message: Option<String>,
}

/// A status code, a class such as `"5xx"`, or a range such as `"400-499"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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
