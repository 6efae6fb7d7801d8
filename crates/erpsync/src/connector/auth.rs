//! Authentication of a system's requests: fixed credentials, or a token (OAuth2 client
//! credentials, login request) cached until shortly before it expires and fetched again once
//! when the system answers 401.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use handlebars::Context;
use serde_json::{Value, json};

use super::error::{CallError, TokenRequestError};
use super::operation::BodyTemplate;
use super::problem::Problems;
use crate::config::model::{ApiKeyLocation, AuthConfig, BodyFormat, HttpMethod};
use crate::expr::{JsonPath, Template};
use crate::redact;

/// A token is dropped this long before the system says it expires, at most: a request
/// signed just before the deadline must not arrive just after it.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// What fetching a token needs from the system it is for (`HttpSystem` is one): its name,
/// clock, counters, template variables, and a request that goes around authentication.
#[async_trait::async_trait]
pub(crate) trait TokenEndpoint: Sync {
    fn system_name(&self) -> &str;
    fn now(&self) -> DateTime<Utc>;
    /// Counts one token fetch.
    fn token_fetched(&self);
    /// `system` (with looked-up values) and `vars`, as templates see them.
    fn system_vars(&self) -> &Value;
    fn vars(&self) -> &Value;
    /// Sends a token or login request: status and decoded body.
    async fn token_request(
        &self,
        method: HttpMethod,
        path: &str,
        headers: &[(String, String)],
        body: Option<&Value>,
        format: BodyFormat,
    ) -> Result<(u16, Value), TokenRequestError>;
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// Headers and query parameters that never change (none, basic, bearer, API key).
    Fixed {
        headers: Vec<(String, String)>,
        query: Vec<(String, String)>,
    },
    OAuth2 {
        token_url: String,
        fields: Vec<(String, String)>,
        body_format: BodyFormat,
    },
    Login(Box<Login>),
}

#[derive(Debug, Clone, PartialEq)]
struct Login {
    method: HttpMethod,
    path: Template,
    body: Option<BodyTemplate>,
    body_format: BodyFormat,
    headers: Vec<(String, Template)>,
    token_path: JsonPath,
    expires_in_path: Option<JsonPath>,
    default_ttl: Duration,
    header: String,
    format: Template,
}

#[derive(Debug, Clone)]
struct Token {
    header: String,
    value: String,
    renew_at: DateTime<Utc>,
    serial: u64,
}

/// What to add to one request.
#[derive(Debug, Default)]
pub(crate) struct Credentials {
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) query: Vec<(String, String)>,
    /// Which token was used, so a 401 drops that token and not a newer one.
    pub(crate) serial: Option<u64>,
}

/// How a system authenticates, checked: credentials in place, templates and paths compiled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AuthSpec {
    kind: Kind,
}

/// A system's authentication, with its token cache.
#[derive(Debug)]
pub(crate) struct Auth {
    kind: Kind,
    // An async lock: callers that find no valid token wait for the one fetch in progress
    // instead of each logging in.
    cache: tokio::sync::Mutex<(Option<Token>, u64)>,
}

impl AuthSpec {
    /// Compiles `auth`; problem paths start with `auth.`.
    pub(crate) fn compile(cfg: Option<&AuthConfig>, p: &mut Problems) -> AuthSpec {
        let fixed = |headers, query| Kind::Fixed { headers, query };
        let kind = match cfg {
            None | Some(AuthConfig::None) => fixed(vec![], vec![]),
            Some(AuthConfig::Basic { username, password }) => {
                let encoded = STANDARD.encode(format!("{username}:{password}"));
                redact::register(password);
                redact::register(&encoded);
                fixed(
                    vec![("Authorization".into(), format!("Basic {encoded}"))],
                    vec![],
                )
            }
            Some(AuthConfig::Bearer { token }) => {
                redact::register(token);
                fixed(
                    vec![("Authorization".into(), format!("Bearer {token}"))],
                    vec![],
                )
            }
            Some(AuthConfig::ApiKey {
                name,
                value,
                location,
            }) => {
                redact::register(value);
                let pair = vec![(name.clone(), value.clone())];
                match location {
                    ApiKeyLocation::Header => fixed(pair, vec![]),
                    ApiKeyLocation::Query => fixed(vec![], pair),
                }
            }
            Some(AuthConfig::OAuth2ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
                body_format,
            }) => {
                redact::register(client_secret);
                let mut fields = vec![
                    ("grant_type".into(), "client_credentials".into()),
                    ("client_id".into(), client_id.clone()),
                    ("client_secret".into(), client_secret.clone()),
                ];
                if let Some(s) = scope {
                    fields.push(("scope".into(), s.clone()));
                }
                Kind::OAuth2 {
                    token_url: token_url.clone(),
                    fields,
                    body_format: *body_format,
                }
            }
            Some(AuthConfig::Login {
                request,
                token_path,
                expires_in_path,
                default_ttl_secs,
                header,
                format,
            }) => {
                let path = p.template("auth.request.path", &request.path);
                let body = request
                    .body
                    .as_ref()
                    .map(|b| BodyTemplate::compile(b, "auth.request.body", p));
                let headers = p.template_map("auth.request.headers", &request.headers);
                let token_path = p.path("auth.token_path", token_path);
                let expires_in_path = expires_in_path
                    .as_deref()
                    .and_then(|e| p.path("auth.expires_in_path", e));
                let format = p.template("auth.format", format);
                match (path, token_path, format) {
                    (Some(path), Some(token_path), Some(format)) => Kind::Login(Box::new(Login {
                        method: request.method,
                        path,
                        body,
                        body_format: request.body_format,
                        headers,
                        token_path,
                        expires_in_path,
                        default_ttl: Duration::from_secs(*default_ttl_secs),
                        header: header.clone(),
                        format,
                    })),
                    // The problems are recorded; the system will not be built.
                    _ => fixed(vec![], vec![]),
                }
            }
        };
        AuthSpec { kind }
    }
}

impl Auth {
    /// The authentication of a running system, with no token yet.
    pub(crate) fn new(spec: &AuthSpec) -> Auth {
        Auth {
            kind: spec.kind.clone(),
            cache: tokio::sync::Mutex::new((None, 0)),
        }
    }

    /// Whether a 401 may be cured by fetching a new token.
    pub(crate) fn refreshable(&self) -> bool {
        !matches!(self.kind, Kind::Fixed { .. })
    }

    /// The credentials for the next request, fetching a token when none is valid.
    pub(crate) async fn credentials(
        &self,
        sys: &impl TokenEndpoint,
    ) -> Result<Credentials, CallError> {
        if let Kind::Fixed { headers, query } = &self.kind {
            return Ok(Credentials {
                headers: headers.clone(),
                query: query.clone(),
                serial: None,
            });
        }
        let mut cache = self.cache.lock().await;
        let now = sys.now();
        let token = match &cache.0 {
            Some(t) if now < t.renew_at => t.clone(),
            _ => {
                let serial = cache.1 + 1;
                let t = self.fetch(sys, now, serial).await?;
                *cache = (Some(t.clone()), serial);
                t
            }
        };
        Ok(Credentials {
            headers: vec![(token.header, token.value)],
            query: vec![],
            serial: Some(token.serial),
        })
    }

    /// Drops the token a request was refused with (not a newer one another caller fetched).
    pub(crate) async fn invalidate(&self, serial: Option<u64>) {
        let mut cache = self.cache.lock().await;
        if cache.0.as_ref().is_some_and(|t| Some(t.serial) == serial) {
            cache.0 = None;
        }
    }

    async fn fetch(
        &self,
        sys: &impl TokenEndpoint,
        now: DateTime<Utc>,
        serial: u64,
    ) -> Result<Token, CallError> {
        let fail = |status: Option<u16>, message: String| CallError::Auth {
            system: sys.system_name().to_owned(),
            status,
            message: redact::redact(&message).into_owned(),
        };
        sys.token_fetched();
        let (header, value, ttl) = match &self.kind {
            Kind::Fixed { .. } => unreachable!("fixed credentials are never fetched"),
            Kind::OAuth2 {
                token_url,
                fields,
                body_format,
            } => {
                let body = Value::Object(
                    fields
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect(),
                );
                let (status, resp) = sys
                    .token_request(HttpMethod::Post, token_url, &[], Some(&body), *body_format)
                    .await
                    .map_err(|e| {
                        fail(None, format!("token request to `{token_url}` failed: {e}"))
                    })?;
                if !(200..300).contains(&status) {
                    return Err(fail(
                        Some(status),
                        format!("token endpoint answered {status}: {resp}"),
                    ));
                }
                let access = resp
                    .get("access_token")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        fail(Some(status), "token response has no `access_token`".into())
                    })?;
                redact::register(access);
                let kind = match resp.get("token_type").and_then(Value::as_str) {
                    None => "Bearer",
                    Some(t) if t.eq_ignore_ascii_case("bearer") => "Bearer",
                    Some(t) => t,
                };
                let ttl = resp.get("expires_in").and_then(seconds);
                ("Authorization".to_string(), format!("{kind} {access}"), ttl)
            }
            Kind::Login(login) => {
                let ctx = Context::from(json!({"system": sys.system_vars(), "vars": sys.vars()}));
                let render = |e: crate::expr::TemplateRenderError| fail(None, e.to_string());
                let path = login.path.render(&ctx).map_err(render)?;
                let body = login
                    .body
                    .as_ref()
                    .map(|b| b.render(&ctx))
                    .transpose()
                    .map_err(render)?;
                let mut headers = Vec::new();
                for (k, t) in &login.headers {
                    headers.push((k.clone(), t.render(&ctx).map_err(render)?));
                }
                let (status, resp) = sys
                    .token_request(
                        login.method,
                        &path,
                        &headers,
                        body.as_ref(),
                        login.body_format,
                    )
                    .await
                    .map_err(|e| fail(None, format!("login request to `{path}` failed: {e}")))?;
                if !(200..300).contains(&status) {
                    return Err(fail(
                        Some(status),
                        format!("login answered {status}: {resp}"),
                    ));
                }
                let token = login
                    .token_path
                    .first(&resp)
                    .and_then(|v| match v {
                        Value::String(s) if !s.is_empty() => Some(s.clone()),
                        Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .ok_or_else(|| {
                        fail(
                            Some(status),
                            format!(
                                "login response has no token at `{}`",
                                login.token_path.as_str()
                            ),
                        )
                    })?;
                redact::register(&token);
                let ttl = login
                    .expires_in_path
                    .as_ref()
                    .and_then(|p| p.first(&resp))
                    .and_then(seconds)
                    .or(Some(login.default_ttl));
                let value_ctx = Context::from(json!({
                    "token": token, "system": sys.system_vars(), "vars": sys.vars()
                }));
                let value = login.format.render(&value_ctx).map_err(render)?;
                redact::register(&value);
                (login.header.clone(), value, ttl)
            }
        };
        let ttl = ttl.unwrap_or(Duration::from_secs(3600));
        let margin = EXPIRY_MARGIN.min(ttl / 4);
        let renew_at =
            now + chrono::Duration::from_std(ttl - margin).unwrap_or(chrono::Duration::MAX);
        tracing::debug!(system = %sys.system_name(), ttl_secs = ttl.as_secs(), "token obtained");
        Ok(Token {
            header,
            value,
            renew_at,
            serial,
        })
    }
}

fn seconds(v: &Value) -> Option<Duration> {
    let secs = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}
