//! Sending one notification to one channel: a signed webhook POST, a Slack message or an
//! email.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::{Notification, SEND_TIMEOUT, SIGNATURE_HEADER};
use crate::config::model::{NotifyChannelConfig, NotifyChannelKind, SmtpTls};

/// Why a channel did not take a message.
#[derive(Debug, thiserror::Error)]
pub(super) enum NotifySendError {
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    /// No client, or no answer; URLs are left out (a Slack URL is a credential).
    #[error(transparent)]
    Http(reqwest::Error),
    #[error("the receiver answered {0}")]
    Refused(reqwest::StatusCode),
    #[error("bad SMTP port in `{0}`")]
    SmtpPort(String),
    #[error("`{field}` `{address}`: {source}")]
    Address {
        field: &'static str,
        address: String,
        source: lettre::address::AddressError,
    },
    #[error(transparent)]
    Message(#[from] lettre::error::Error),
    #[error(transparent)]
    Smtp(#[from] lettre::transport::smtp::Error),
}

/// The hex HMAC-SHA256 of a webhook channel's body.
pub(super) fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Sends `n` to one channel; whatever a failed send logs is masked first.
pub(super) async fn send(
    ch: &NotifyChannelConfig,
    n: &Notification,
) -> Result<(), NotifySendError> {
    // Masked in whatever a failed send logs; a Slack URL is itself the credential.
    for s in [&ch.secret, &ch.password].into_iter().flatten() {
        crate::redact::register(s);
    }
    if ch.kind == NotifyChannelKind::Slack
        && let Some(u) = &ch.url
    {
        crate::redact::register(u);
    }
    match ch.kind {
        NotifyChannelKind::Webhook => {
            let body = serde_json::to_vec(n)?;
            let mut req = http()?
                .post(ch.url.as_deref().unwrap_or_default())
                .header("content-type", "application/json");
            if let Some(secret) = &ch.secret {
                req = req.header(
                    SIGNATURE_HEADER,
                    format!("sha256={}", signature(secret, &body)),
                );
            }
            check(req.body(body).send().await).await
        }
        NotifyChannelKind::Slack => {
            let body = json!({"text": format!("*{}*\n{}", n.title, n.text)});
            check(
                http()?
                    .post(ch.url.as_deref().unwrap_or_default())
                    .json(&body)
                    .send()
                    .await,
            )
            .await
        }
        NotifyChannelKind::Email => email(ch, n).await,
    }
}

fn http() -> Result<reqwest::Client, NotifySendError> {
    reqwest::Client::builder()
        .timeout(SEND_TIMEOUT)
        .build()
        .map_err(NotifySendError::Http)
}

async fn check(r: Result<reqwest::Response, reqwest::Error>) -> Result<(), NotifySendError> {
    let r = r.map_err(|e| NotifySendError::Http(e.without_url()))?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(NotifySendError::Refused(r.status()))
    }
}

async fn email(ch: &NotifyChannelConfig, n: &Notification) -> Result<(), NotifySendError> {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let server = ch.smtp.as_deref().unwrap_or_default();
    let (host, port) = match server.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| NotifySendError::SmtpPort(server.to_string()))?,
        ),
        None => (server, 587),
    };
    let tls = match ch.tls {
        SmtpTls::Starttls => Tls::Required(TlsParameters::new(host.to_string())?),
        SmtpTls::None => Tls::None,
    };
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .tls(tls)
        .timeout(Some(SEND_TIMEOUT));
    if let (Some(u), Some(p)) = (&ch.username, &ch.password) {
        transport = transport.credentials(Credentials::new(u.clone(), p.clone()));
    }
    let from = ch.from.as_deref().unwrap_or_default();
    let mut msg = Message::builder()
        .from(address("from", from)?)
        .subject(n.title.clone());
    for to in &ch.to {
        msg = msg.to(address("to", to)?);
    }
    let msg = msg.body(format!("{}\n", n.text))?;
    transport.build().send(msg).await?;
    Ok(())
}

fn address(field: &'static str, text: &str) -> Result<lettre::message::Mailbox, NotifySendError> {
    text.parse().map_err(|source| NotifySendError::Address {
        field,
        address: text.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hex_hmac_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
