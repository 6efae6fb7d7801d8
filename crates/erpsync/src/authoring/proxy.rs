//! The recording proxy: a loopback server per system that forwards each request to the
//! system's real `base_url` and keeps the exchange, secrets masked. `erpsync call` shows what
//! went over the wire this way, and `--record` writes it down for `erpsync test`, without the
//! connector knowing it is watched.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::exchange::{
    BASE_URL_PLACEHOLDER, ExchangeConfig, RequestConfig, ResponseConfig, body_value, mask_form,
    mask_header, mask_json, replace_in_json,
};
use super::server::{Incoming, Loopback, Outgoing};
use crate::redact::redact;

/// Request headers that say nothing about the request itself.
const SKIPPED_REQUEST_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "connection",
    "accept-encoding",
    "transfer-encoding",
];

/// Response headers that describe the transport, not the answer.
const SKIPPED_RESPONSE_HEADERS: &[&str] = &[
    "date",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "server",
];

/// One exchange that went through a proxy.
#[derive(Debug, Clone)]
pub struct Seen {
    /// As written to a recording: masked, absolute URLs of the system as `{{base_url}}`.
    pub exchange: ExchangeConfig,
    /// The real URL called, secrets masked.
    pub url: String,
    pub duration: Duration,
    /// Why the system could not be reached, when it could not.
    pub error: Option<String>,
}

/// The exchanges seen by every proxy of a recording, in the order they were answered.
#[derive(Debug, Default, Clone)]
pub struct Recording(Arc<Mutex<Vec<Seen>>>);

impl Recording {
    pub fn exchanges(&self) -> Vec<Seen> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Proxies of the systems of a project, by system.
pub struct Proxies {
    pub recording: Recording,
    /// System → the proxy's URL, to put in place of its `base_url`.
    pub urls: BTreeMap<String, String>,
    _servers: Vec<Loopback>,
}

impl Proxies {
    /// Starts a proxy for each system (name → real base URL). Inside a tokio runtime.
    pub async fn start(systems: &BTreeMap<String, String>) -> anyhow::Result<Proxies> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(120))
            .build()?;
        let recording = Recording::default();
        let mut urls = BTreeMap::new();
        let mut servers = Vec::new();
        for (system, upstream) in systems {
            // The port is known only once bound: the handler learns its own address after.
            let own = Arc::new(std::sync::OnceLock::<String>::new());
            let ctx = Arc::new(Ctx {
                system: system.clone(),
                upstream: upstream.trim_end_matches('/').to_string(),
                own: own.clone(),
                client: client.clone(),
                recording: recording.clone(),
            });
            let server = Loopback::start(move |incoming| {
                let ctx = ctx.clone();
                async move { ctx.forward(incoming).await }
            })
            .await?;
            let _ = own.set(server.url());
            urls.insert(system.clone(), server.url());
            servers.push(server);
        }
        Ok(Proxies {
            recording,
            urls,
            _servers: servers,
        })
    }
}

struct Ctx {
    system: String,
    upstream: String,
    own: Arc<std::sync::OnceLock<String>>,
    client: reqwest::Client,
    recording: Recording,
}

impl Ctx {
    async fn forward(&self, incoming: Incoming) -> Outgoing {
        let own = self.own.get().cloned().unwrap_or_default();
        let mut url = format!("{}{}", self.upstream, incoming.path);
        if let Some(q) = &incoming.query {
            url.push('?');
            url.push_str(q);
        }
        let mut req = self.client.request(incoming.method.clone(), &url);
        for (k, v) in &incoming.headers {
            if !SKIPPED_REQUEST_HEADERS.contains(&k.as_str()) {
                req = req.header(k, v);
            }
        }
        if !incoming.body.is_empty() {
            req = req.body(incoming.body.to_vec());
        }
        let started = Instant::now();
        let result = async {
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, bytes))
        }
        .await;
        let duration = started.elapsed();
        let request = self.request_seen(&incoming);
        let (out, response, error) = match result {
            Ok((status, headers, bytes)) => {
                // Links to the system point back at the proxy, so the next page is seen too.
                let text = String::from_utf8(bytes.to_vec()).ok();
                // JSON from PHP escapes slashes (`http:\/\/shop\/…`): those links too.
                let escaped = |u: &str| u.replace('/', "\\/");
                let body = match &text {
                    Some(t) => t
                        .replace(&self.upstream, &own)
                        .replace(&escaped(&self.upstream), &escaped(&own))
                        .into_bytes(),
                    None => bytes.to_vec(),
                };
                let mut out_headers = Vec::new();
                let mut kept = BTreeMap::new();
                for (k, v) in &headers {
                    let Ok(v) = v.to_str() else { continue };
                    if SKIPPED_RESPONSE_HEADERS.contains(&k.as_str()) {
                        continue;
                    }
                    out_headers.push((k.to_string(), v.replace(&self.upstream, &own)));
                    kept.insert(
                        k.to_string(),
                        mask_header(k.as_str(), &v.replace(&self.upstream, BASE_URL_PLACEHOLDER)),
                    );
                }
                let value = replace_in_json(&body_value(&body), &own, BASE_URL_PLACEHOLDER);
                let response = ResponseConfig {
                    status,
                    headers: kept,
                    body: mask_json(&value),
                };
                let out = Outgoing {
                    status,
                    headers: out_headers,
                    body,
                };
                (out, response, None)
            }
            Err(e) => {
                let mut message = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    message.push_str(&format!(": {s}"));
                    source = s.source();
                }
                let message = redact(&message).into_owned();
                let body = serde_json::json!({ "erpsync_proxy": format!("cannot reach `{}`: {message}", self.system) });
                let out = Outgoing {
                    status: 502,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: body.to_string().into_bytes(),
                };
                let response = ResponseConfig {
                    status: 502,
                    headers: BTreeMap::new(),
                    body,
                };
                (out, response, Some(message))
            }
        };
        let seen = Seen {
            exchange: ExchangeConfig {
                system: self.system.clone(),
                request,
                response,
                repeat: false,
                optional: false,
            },
            url: redact(&url).into_owned(),
            duration,
            error,
        };
        self.recording
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(seen);
        out
    }

    fn request_seen(&self, incoming: &Incoming) -> RequestConfig {
        let mut headers = BTreeMap::new();
        for (k, v) in &incoming.headers {
            if SKIPPED_REQUEST_HEADERS.contains(&k.as_str()) {
                continue;
            }
            if let Ok(v) = v.to_str() {
                headers.insert(k.to_string(), mask_header(k.as_str(), v));
            }
        }
        let query = incoming.query.as_ref().map(|_| {
            incoming
                .query_pairs()
                .into_iter()
                .map(|(k, v)| {
                    let v = mask_header(&k, &v);
                    (k, v)
                })
                .collect()
        });
        let form = incoming
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let body = if incoming.body.is_empty() {
            None
        } else if form {
            Some(Value::String(mask_form(&String::from_utf8_lossy(
                &incoming.body,
            ))))
        } else {
            Some(mask_json(&body_value(&incoming.body)))
        };
        RequestConfig {
            operation: None,
            id: None,
            key: None,
            method: incoming.method.to_string(),
            path: incoming.path.clone(),
            query,
            headers,
            body,
        }
    }
}
