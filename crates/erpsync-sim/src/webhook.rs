//! Outbound webhooks of the shop simulator: signed JSON posts delivered in order by one
//! background task, with a log and a way for tests to wait until every delivery is done.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::{Notify, mpsc};

/// Header carrying `base64(HMAC-SHA256(raw body, secret))`.
pub const SIGNATURE_HEADER: &str = "X-Webhook-Signature";
/// Header carrying the delivery id (the same on a duplicate delivery).
pub const DELIVERY_ID_HEADER: &str = "X-Webhook-Id";

/// Where webhooks go and the secret they are signed with.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: String,
    pub secret: String,
}

/// One delivery attempt, as logged by the simulator.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookDelivery {
    pub id: String,
    pub event: String,
    pub body: String,
    /// Status the receiver answered, when it answered.
    pub status: Option<u16>,
    /// Why the delivery failed, when it did.
    pub error: Option<String>,
}

/// The signature a receiver should compute for `body`.
pub fn sign(body: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

struct Job {
    config: WebhookConfig,
    id: String,
    event: String,
    body: String,
    content_type: &'static str,
    /// Headers besides the signature and delivery id.
    extra: Vec<(&'static str, String)>,
    copies: usize,
}

/// The names of the headers a simulator signs and numbers its deliveries with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WebhookHeaders {
    pub signature: &'static str,
    pub delivery_id: &'static str,
}

/// The shop simulator's own headers.
const DEFAULT_HEADERS: WebhookHeaders = WebhookHeaders {
    signature: SIGNATURE_HEADER,
    delivery_id: DELIVERY_ID_HEADER,
};

/// Queue and log of deliveries.
#[derive(Debug)]
pub(crate) struct WebhookSender {
    tx: mpsc::UnboundedSender<Job>,
    config: Mutex<Option<WebhookConfig>>,
    next_id: AtomicUsize,
    pending: Arc<AtomicUsize>,
    idle: Arc<Notify>,
    log: Arc<Mutex<Vec<WebhookDelivery>>>,
}

/// What [`WebhookSender::send_raw`] posts.
pub(crate) struct Outgoing<'a> {
    pub event: &'a str,
    pub body: String,
    pub content_type: &'static str,
    pub extra: Vec<(&'static str, String)>,
    pub duplicate: bool,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("id", &self.id).finish()
    }
}

impl WebhookSender {
    /// Starts the delivery task; it ends when the sender is dropped.
    pub fn start(config: Option<WebhookConfig>) -> anyhow::Result<Self> {
        Self::start_with(config, DEFAULT_HEADERS)
    }

    /// Starts the delivery task with other header names.
    pub(crate) fn start_with(
        config: Option<WebhookConfig>,
        headers: WebhookHeaders,
    ) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let pending = Arc::new(AtomicUsize::new(0));
        let idle = Arc::new(Notify::new());
        let log = Arc::new(Mutex::new(Vec::new()));
        let (task_pending, task_idle, task_log) = (pending.clone(), idle.clone(), log.clone());
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                for _ in 0..job.copies {
                    let mut request = client
                        .post(&job.config.url)
                        .header("Content-Type", job.content_type)
                        .header(
                            headers.signature,
                            sign(job.body.as_bytes(), &job.config.secret),
                        )
                        .header(headers.delivery_id, &job.id);
                    for (name, value) in &job.extra {
                        request = request.header(*name, value);
                    }
                    let sent = request.body(job.body.clone()).send().await;
                    let (status, error) = match sent {
                        Ok(r) => (Some(r.status().as_u16()), None),
                        Err(e) => (None, Some(e.to_string())),
                    };
                    task_log.lock().unwrap().push(WebhookDelivery {
                        id: job.id.clone(),
                        event: job.event.clone(),
                        body: job.body.clone(),
                        status,
                        error,
                    });
                }
                if task_pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                    task_idle.notify_waiters();
                }
            }
        });
        Ok(WebhookSender {
            tx,
            config: Mutex::new(config),
            next_id: AtomicUsize::new(0),
            pending,
            idle,
            log,
        })
    }

    pub(crate) fn set_config(&self, config: Option<WebhookConfig>) {
        *self.config.lock().unwrap() = config;
    }

    /// Queues a delivery of `payload` (twice when `duplicate`); nothing when no target is set.
    pub fn send(&self, event: &str, payload: &serde_json::Value, duplicate: bool) {
        self.send_raw(Outgoing {
            event,
            body: payload.to_string(),
            content_type: "application/json",
            extra: Vec::new(),
            duplicate,
        });
    }

    /// Queues a delivery of any body with extra headers; nothing when no target is set.
    pub(crate) fn send_raw(&self, out: Outgoing<'_>) {
        let Some(config) = self.config.lock().unwrap().clone() else {
            return;
        };
        let n = self.next_id.fetch_add(1, Ordering::SeqCst) + 1;
        let job = Job {
            config,
            id: format!("whd-{n:06}"),
            event: out.event.to_owned(),
            body: out.body,
            content_type: out.content_type,
            extra: out.extra,
            copies: if out.duplicate { 2 } else { 1 },
        };
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(job).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Waits until every queued delivery has been attempted.
    pub async fn flush(&self) {
        loop {
            let idle = self.idle.notified();
            if self.pending.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }

    pub fn log(&self) -> Vec<WebhookDelivery> {
        self.log.lock().unwrap().clone()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_is_base64_hmac_sha256() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), a published vector.
        let sig = super::sign(b"The quick brown fox jumps over the lazy dog", "key");
        assert_eq!(sig, "97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg=");
    }
}
