//! A PostgreSQL schema of a test's own on the test server (`ERPSYNC_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/test`), dropped at the end of the test.

use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::Utc;
use erpsync::state::{PostgresStore, Store};

/// A schema of its own on the test server, dropped with this value.
pub struct PgSchema {
    pub url: String,
}

impl PgSchema {
    pub fn open(&self) -> Store {
        PostgresStore::open(&self.url).unwrap().into()
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if let Err(e) = PostgresStore::drop_schema(&self.url) {
            eprintln!("cannot drop test schema: {e}");
        }
    }
}

/// A fresh schema, or None when PostgreSQL is unreachable and the caller allowed skipping.
pub fn pg() -> Option<PgSchema> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let base = std::env::var("ERPSYNC_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let nanos = Utc::now().timestamp_subsec_nanos();
    let schema = format!(
        "erpsync_t{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}schema={schema}");
    match PostgresStore::open(&url) {
        Ok(_) => Some(PgSchema { url }),
        Err(e) if super::offline::may_skip_postgres() => {
            eprintln!("skipped: PostgreSQL not reachable ({e})");
            None
        }
        Err(e) => panic!(
            "PostgreSQL is not reachable at `{}`: {e}\n\
             start it (`pg_ctlcluster <version> main start`), point ERPSYNC_TEST_POSTGRES at \
             one, or set ERPSYNC_SKIP_POSTGRES=1 (or ERPSYNC_OFFLINE=1) to skip these tests",
            erpsync::state::redact_url(&base)
        ),
    }
}
