//! A loopback HTTP server that hands every request to one function: the base of the
//! recording proxy (`call`, `run --record`) and of the replay server (`erpsync test`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use tokio::task::JoinHandle;

/// A request as the server received it.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    pub method: Method,
    /// The path, from `/`.
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Incoming {
    /// The query as pairs, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.query.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect()
    }
}

/// What the server answers.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

type Handler =
    Arc<dyn Fn(Incoming) -> Pin<Box<dyn Future<Output = Outgoing> + Send>> + Send + Sync>;

/// A running loopback server; dropping it stops it.
pub(crate) struct Loopback {
    pub addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Loopback {
    /// Serves `handle` on a free loopback port. Must be called inside a tokio runtime.
    pub async fn start<F, Fut>(handle: F) -> std::io::Result<Loopback>
    where
        F: Fn(Incoming) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outgoing> + Send + 'static,
    {
        let handle: Handler = Arc::new(move |i| Box::pin(handle(i)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let router = axum::Router::new().fallback(move |req: Request| {
            let handle = handle.clone();
            async move { answer(handle, req).await }
        });
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, router).await {
                tracing::error!(%err, "loopback server stopped");
            }
        });
        Ok(Loopback {
            addr,
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn answer(handle: Handler, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let incoming = Incoming {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
    };
    let out = handle(incoming).await;
    let mut resp = Response::builder()
        .status(StatusCode::from_u16(out.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    for (k, v) in &out.headers {
        resp = resp.header(k.as_str(), v.as_str());
    }
    resp.body(Body::from(out.body)).unwrap_or_else(|_| {
        let mut r = Response::new(Body::from("erpsync: a recorded header is not valid HTTP"));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}
