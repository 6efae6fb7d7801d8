//! The replay server of `erpsync test`: a loopback server per system that answers each
//! request from the test's exchanges (method, path and query matched), checks the bodies
//! sent, and keeps every request no exchange answers, so a test runs without network and says
//! exactly which request it did not expect.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use super::exchange::{
    ANY, BASE_URL_PLACEHOLDER, ExchangeConfig, body_value, replace_in_json, subset_diff,
};
use super::server::{Incoming, Loopback, Outgoing};
use crate::redact::MASK;

/// An exchange of the test and how often it was served.
#[derive(Debug)]
struct Fixture {
    /// 1-based place in the test's list, as reports name it.
    number: usize,
    exchange: ExchangeConfig,
    served: u32,
}

#[derive(Debug, Default)]
struct Book {
    fixtures: Vec<Fixture>,
    problems: Vec<String>,
    /// Every request, as `system METHOD /path?query`, in order.
    requests: Vec<String>,
}

/// The replay servers of one test.
pub(crate) struct Replay {
    book: Arc<Mutex<Book>>,
    /// System → the server's URL, to put in place of its `base_url`.
    pub urls: BTreeMap<String, String>,
    _servers: Vec<Loopback>,
}

impl Replay {
    /// Starts a server for each system, serving `exchanges`. Inside a tokio runtime.
    pub async fn start(
        systems: impl IntoIterator<Item = String>,
        exchanges: Vec<ExchangeConfig>,
    ) -> std::io::Result<Replay> {
        let book = Arc::new(Mutex::new(Book {
            fixtures: exchanges
                .into_iter()
                .enumerate()
                .map(|(i, exchange)| Fixture {
                    number: i + 1,
                    exchange,
                    served: 0,
                })
                .collect(),
            ..Default::default()
        }));
        let mut urls = BTreeMap::new();
        let mut servers = Vec::new();
        for system in systems {
            let own = Arc::new(std::sync::OnceLock::<String>::new());
            let (b, o, s) = (book.clone(), own.clone(), system.clone());
            let server = Loopback::start(move |incoming| {
                let out = answer(&b, &s, o.get().map(String::as_str).unwrap_or(""), incoming);
                async move { out }
            })
            .await?;
            let _ = own.set(server.url());
            urls.insert(system, server.url());
            servers.push(server);
        }
        Ok(Replay {
            book,
            urls,
            _servers: servers,
        })
    }

    /// What went wrong: requests no exchange answered, bodies that differ, and exchanges
    /// (not `optional`) no request asked for.
    pub fn problems(&self) -> Vec<String> {
        let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = book.problems.clone();
        for f in &book.fixtures {
            if f.served == 0 && !f.exchange.optional {
                out.push(format!(
                    "exchange #{} was never requested: {}",
                    f.number,
                    describe_fixture(&f.exchange)
                ));
            }
        }
        out
    }
}

fn describe_fixture(e: &ExchangeConfig) -> String {
    let mut text = format!("`{}` {} {}", e.system, e.request.method, e.request.path);
    if let Some(q) = &e.request.query
        && !q.is_empty()
    {
        let pairs: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
        text.push('?');
        text.push_str(&pairs.join("&"));
    }
    text
}

fn describe_request(system: &str, incoming: &Incoming) -> String {
    let mut text = format!("`{system}` {} {}", incoming.method, incoming.path);
    if let Some(q) = &incoming.query {
        text.push('?');
        text.push_str(&crate::redact::redact(q));
    }
    text
}

fn wildcard(v: &str) -> bool {
    v == ANY || v == MASK
}

/// Why the query does not match the fixture's, or `None` when it does.
fn query_mismatch(
    expected: &Option<BTreeMap<String, String>>,
    actual: &[(String, String)],
) -> Option<String> {
    let expected = expected.as_ref()?;
    let mut out = Vec::new();
    for (k, v) in expected {
        // A repeated parameter (`f=a&f=b`) matches when one of its values does.
        let values: Vec<&String> = actual
            .iter()
            .filter(|(ak, _)| ak == k)
            .map(|(_, av)| av)
            .collect();
        match values.as_slice() {
            [] => out.push(format!("`{k}` missing (expected `{v}`)")),
            vs if wildcard(v) || vs.contains(&v) => {}
            vs => out.push(format!(
                "`{k}` is `{}`, expected `{v}`",
                vs.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("`, `")
            )),
        }
    }
    for (k, v) in actual {
        if !expected.contains_key(k) {
            out.push(format!("`{k}={v}` not expected"));
        }
    }
    (!out.is_empty()).then(|| out.join(", "))
}

fn is_form(incoming: &Incoming) -> bool {
    incoming
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

fn form_object(text: &str) -> Value {
    let m: Map<String, Value> = url::form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    Value::Object(m)
}

fn answer(book: &Mutex<Book>, system: &str, own: &str, incoming: Incoming) -> Outgoing {
    let mut book = book.lock().unwrap_or_else(|e| e.into_inner());
    let described = describe_request(system, &incoming);
    book.requests.push(described.clone());
    let query = incoming.query_pairs();
    let matches = |f: &Fixture| {
        f.exchange.system == system
            && f.exchange
                .request
                .method
                .eq_ignore_ascii_case(incoming.method.as_str())
            && f.exchange.request.path == incoming.path
            && query_mismatch(&f.exchange.request.query, &query).is_none()
    };
    // The first unused exchange that matches, else one that may repeat.
    let chosen = book
        .fixtures
        .iter()
        .position(|f| f.served == 0 && matches(f))
        .or_else(|| {
            book.fixtures
                .iter()
                .position(|f| f.exchange.repeat && matches(f))
        });
    let Some(i) = chosen else {
        let mut problem = format!("unexpected request: {described}");
        let near: Vec<String> = book
            .fixtures
            .iter()
            .filter(|f| {
                f.exchange.system == system
                    && f.exchange.request.path == incoming.path
                    && f.exchange
                        .request
                        .method
                        .eq_ignore_ascii_case(incoming.method.as_str())
            })
            .map(
                |f| match query_mismatch(&f.exchange.request.query, &query) {
                    Some(why) => format!("exchange #{}: query {why}", f.number),
                    None => format!("exchange #{}: already served", f.number),
                },
            )
            .collect();
        if near.is_empty() {
            problem.push_str(" (no exchange for this method and path)");
        } else {
            problem.push_str(&format!(" ({})", near.join("; ")));
        }
        book.problems.push(problem.clone());
        let body = serde_json::json!({ "erpsync_test": problem });
        return Outgoing {
            status: 400,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        };
    };
    book.fixtures[i].served += 1;
    let number = book.fixtures[i].number;
    let exchange = book.fixtures[i].exchange.clone();
    if let Some(expected) = &exchange.request.body {
        let actual = if is_form(&incoming) {
            form_object(&String::from_utf8_lossy(&incoming.body))
        } else {
            body_value(&incoming.body)
        };
        let expected = match (expected, is_form(&incoming)) {
            (Value::String(s), true) => form_object(s),
            (other, _) => other.clone(),
        };
        let mut diffs = Vec::new();
        subset_diff(&expected, &actual, "", &mut diffs);
        for d in diffs {
            book.problems.push(format!(
                "{described} (exchange #{number}): {}",
                crate::redact::redact(&d)
            ));
        }
    }
    let response = &exchange.response;
    let body = replace_in_json(&response.body, BASE_URL_PLACEHOLDER, own);
    let mut headers: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.replace(BASE_URL_PLACEHOLDER, own)))
        .collect();
    let has_type = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    let bytes = match &body {
        Value::Null => Vec::new(),
        Value::String(s) => {
            if !has_type {
                headers.push(("content-type".into(), "text/plain; charset=utf-8".into()));
            }
            s.clone().into_bytes()
        }
        other => {
            if !has_type {
                headers.push(("content-type".into(), "application/json".into()));
            }
            other.to_string().into_bytes()
        }
    };
    Outgoing {
        status: response.status,
        headers,
        body: bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_query_matches_whole_with_wildcards_and_repeated_names() {
        let want = Some(BTreeMap::from([
            ("f".to_string(), "code".to_string()),
            ("d".to_string(), "*".to_string()),
            ("key".to_string(), MASK.to_string()),
        ]));
        let got = pairs(&[("f", "name"), ("f", "code"), ("d", "x"), ("key", "s3")]);
        assert_eq!(query_mismatch(&want, &got), None);
        assert_eq!(query_mismatch(&None, &got), None, "no query: any");
        assert_eq!(
            query_mismatch(&want, &pairs(&[("f", "name"), ("d", "x"), ("page", "2")])),
            Some(
                "`f` is `name`, expected `code`, `key` missing (expected `***`), `page=2` not expected"
                    .to_string()
            )
        );
    }
}
