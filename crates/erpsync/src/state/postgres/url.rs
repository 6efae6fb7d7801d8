//! PostgreSQL URLs: the parameters erpsync reads itself (`schema=`, TLS modes), and printing
//! a URL without its password.

use super::session::Session;
use super::tls::TlsSettings;
use crate::state::{Result, StateStoreError};

/// A database URL taken apart: what the driver reads, and the parameters erpsync handles
/// itself (the driver refuses unknown ones and knows fewer TLS modes).
pub(super) struct Target {
    /// The URL without `schema=`, `sslmode=` and `sslrootcert=`.
    pub(super) url: String,
    pub(super) schema: Option<String>,
    pub(super) tls: TlsSettings,
}

pub(super) fn split_url(url: &str) -> Result<Target> {
    let mut target = Target {
        url: url.to_string(),
        schema: None,
        tls: TlsSettings::default(),
    };
    let Some((base, query)) = url.split_once('?') else {
        return Ok(target);
    };
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let is_tls = target.tls.take(pair).map_err(StateStoreError::Tls)?;
        if is_tls {
            continue;
        }
        match pair.strip_prefix("schema=") {
            Some(s) => {
                let valid = !s.is_empty()
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !s.starts_with(|c: char| c.is_ascii_digit());
                if !valid {
                    return Err(StateStoreError::Url(redact_url(url)));
                }
                target.schema = Some(s.to_string());
            }
            None => rest.push(pair),
        }
    }
    target.url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok(target)
}

impl Target {
    /// What the store's connections are opened with: the driver's configuration, the TLS
    /// connector, the schema, and `shown` (the URL without its password) for messages.
    pub(super) fn session(&self, shown: &str) -> Result<Session> {
        let mut config: tokio_postgres::Config = self
            .url
            .parse()
            .map_err(|_| StateStoreError::Url(shown.to_string()))?;
        config.ssl_mode(self.tls.driver_mode());
        let tls = self.tls.connector().map_err(StateStoreError::Tls)?;
        Ok(Session {
            config,
            tls,
            schema: self.schema.clone(),
            shown: shown.to_string(),
        })
    }
}

/// A database URL fit to print: the password, in the user part or as a `password=`
/// parameter, becomes `***`.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(start) = out.find("://").map(|i| i + 3) {
        let end = out[start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..end].rfind('@').map(|i| start + i)
            && let Some(colon) = out[start..at].find(':').map(|i| start + i)
        {
            out.replace_range(colon + 1..at, "***");
        }
    }
    if let Some((base, query)) = out.split_once('?') {
        let query: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_string(),
            })
            .collect();
        out = format!("{base}?{}", query.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::postgres::tls;

    #[test]
    fn passwords_never_show_in_urls() {
        for (url, shown) in [
            (
                "postgres://erp:s3cret@db:5432/state?schema=a",
                "postgres://erp:***@db:5432/state?schema=a",
            ),
            (
                "postgresql://erp@db/state?password=s3cret&sslmode=disable",
                "postgresql://erp@db/state?password=***&sslmode=disable",
            ),
            ("postgres://db/state", "postgres://db/state"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
    }

    #[test]
    fn the_schema_parameter_is_taken_out_of_the_url() {
        let t = split_url("postgres://db/x?schema=erp_a&connect_timeout=5").unwrap();
        let (url, schema) = (t.url, t.schema);
        assert_eq!(url, "postgres://db/x?connect_timeout=5");
        assert_eq!(schema.as_deref(), Some("erp_a"));
        let t = split_url("postgres://db/x?sslmode=verify-ca&sslrootcert=%2Fca.pem").unwrap();
        assert_eq!(t.url, "postgres://db/x");
        assert_eq!(t.tls.mode, tls::SslMode::VerifyCa);
        assert!(split_url("postgres://db/x?schema=a;drop").is_err());
    }
}
