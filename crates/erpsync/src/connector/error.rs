//! Why a call failed, in the terms the engine decides on: give up on the record, look it up
//! before trying again, wait, or fix the flow file.

use serde_json::Value;

/// A failed call. Every text and body in it has been through `redact`.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The system refused the request for good (4xx, or a rule classified it `fail`).
    #[error("`{system}.{operation}` failed with status {status}: {message}")]
    Permanent {
        system: String,
        operation: String,
        status: u16,
        message: String,
        body: Box<Value>,
    },
    /// The record does not exist.
    #[error("`{system}.{operation}` found nothing (status {status})")]
    NotFound {
        system: String,
        operation: String,
        status: u16,
        body: Box<Value>,
    },
    /// A write that is not safe to repeat may or may not have been applied; it was not sent
    /// again. The engine resolves it by a lookup before any retry.
    #[error("`{system}.{operation}` outcome unknown, not sent again: {message}")]
    InDoubt {
        system: String,
        operation: String,
        status: Option<u16>,
        message: String,
    },
    /// The system kept answering "too many requests" until the attempts ran out.
    #[error("`{system}.{operation}` still rate limited after {attempts} attempts")]
    RateLimited {
        system: String,
        operation: String,
        attempts: u32,
    },
    /// The system asked for a wait longer than this run may wait (`--max-wait`).
    #[error(
        "`{system}.{operation}`: `{system}` {reason}: a wait of {wait_secs} s, until {until}, \
         longer than the {max_secs} s this run may wait"
    )]
    WaitTooLong {
        system: String,
        operation: String,
        reason: String,
        wait_secs: u64,
        until: String,
        max_secs: u64,
    },
    /// The system could not be reached, or kept failing, until the attempts ran out.
    #[error("`{system}.{operation}` failed after {attempts} attempts: {message}")]
    Transport {
        system: String,
        operation: String,
        status: Option<u16>,
        attempts: u32,
        message: String,
    },
    /// The system is taken as down (its circuit breaker is open): the call was not sent.
    #[error("system `{system}` is down ({message}); `{operation}` not sent")]
    Down {
        system: String,
        operation: String,
        message: String,
    },
    /// A listing would not end (a repeated page, a cursor seen before, `max_pages`), or a
    /// page is not one (no member to read its records from).
    #[error("`{system}.{operation}` pagination stopped at page {page}: {message}")]
    Pagination {
        system: String,
        operation: String,
        page: u32,
        message: String,
    },
    /// No token could be obtained, or the system refused the credentials.
    #[error("system `{system}` authentication failed: {message}")]
    Auth {
        system: String,
        status: Option<u16>,
        message: String,
    },
    /// The run lost its flow's lease: the write was not sent (another node runs the flow).
    #[error("`{system}.{operation}` not sent: {source}")]
    LeaseLost {
        system: String,
        operation: String,
        source: crate::state::lease::LeaseLostError,
    },
    /// A template of the operation could not be rendered with this input.
    #[error("`{system}.{operation}` could not be rendered: {message}")]
    Render {
        system: String,
        operation: String,
        message: String,
    },
    /// A step of a multi-step operation failed; `request` is what the step sent (method,
    /// path and body, secrets masked).
    #[error("`{system}.{operation}` step `{step}` failed: {source}")]
    Step {
        system: String,
        operation: String,
        step: String,
        request: Box<Value>,
        source: Box<CallError>,
    },
    /// The system has no operation of that name.
    #[error("system `{system}` has no operation `{operation}` (known: {})", known.join(", "))]
    UnknownOperation {
        system: String,
        operation: String,
        known: Vec<String>,
    },
}

impl CallError {
    /// The error itself, out of the step it happened in.
    pub(crate) fn root(&self) -> &CallError {
        match self {
            CallError::Step { source, .. } => source.root(),
            other => other,
        }
    }

    /// The response body behind the error, when the system refused the request.
    pub(crate) fn body(&self) -> Option<&Value> {
        match self.root() {
            CallError::Permanent { body, .. } | CallError::NotFound { body, .. } => Some(body),
            _ => None,
        }
    }

    /// The HTTP status behind the error, when there was a response.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            CallError::Step { source, .. } => source.status(),
            CallError::Permanent { status, .. } | CallError::NotFound { status, .. } => {
                Some(*status)
            }
            CallError::InDoubt { status, .. }
            | CallError::Transport { status, .. }
            | CallError::Auth { status, .. } => *status,
            _ => None,
        }
    }

    /// Whether trying the same call later may succeed without changing the flow or the data.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.root(),
            CallError::RateLimited { .. }
                | CallError::Transport { .. }
                | CallError::Down { .. }
                | CallError::WaitTooLong { .. }
        )
    }
}

/// A path or page link that does not make a URL.
#[derive(Debug, thiserror::Error)]
#[error("`{url}` is not a valid URL: {source}")]
pub(crate) struct UrlParseError {
    pub(crate) url: String,
    pub(crate) source: url::ParseError,
}

impl UrlParseError {
    /// Parses `url`, keeping the text that failed for the message.
    pub(crate) fn parse(url: &str) -> Result<url::Url, UrlParseError> {
        url::Url::parse(url).map_err(|source| UrlParseError {
            url: url.to_string(),
            source,
        })
    }
}

/// Why an operation's request could not be put together from its templates.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestRenderError {
    #[error(transparent)]
    Url(#[from] UrlParseError),
    #[error(transparent)]
    Template(#[from] crate::expr::TemplateRenderError),
}

/// Why a token or login request got no answer: the caller words it as an authentication
/// failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenRequestError {
    #[error(transparent)]
    Url(#[from] UrlParseError),
    /// The system is marked down, or waiting for its budget was refused.
    #[error(transparent)]
    Call(#[from] CallError),
    /// No response, or a body that could not be read; the message holds the causes.
    #[error("{0}")]
    Transport(String),
}
