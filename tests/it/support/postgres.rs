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
    /// A store on this schema, its connections on the current runtime.
    pub async fn open(&self) -> Store {
        PostgresStore::open(&self.url).await.unwrap().into()
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let url = self.url.clone();
        if let Err(e) =
            on_a_runtime_of_its_own(async move { PostgresStore::drop_schema(&url).await })
        {
            eprintln!("cannot drop test schema: {e}");
        }
    }
}

/// Runs `f` to its end on a thread and runtime of its own, so a sync caller may be inside a
/// runtime or not.
fn on_a_runtime_of_its_own<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
    .join()
    .unwrap()
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
    let probe = url.clone();
    match on_a_runtime_of_its_own(async move { PostgresStore::open(&probe).await.map(drop) }) {
        Ok(()) => Some(PgSchema { url }),
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
