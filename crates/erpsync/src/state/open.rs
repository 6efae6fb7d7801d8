//! Opening the store a `state.url` names.

use super::model::{Result, StateStoreError};
use super::postgres::{PostgresStore, redact_url};
use super::sqlite::SqliteStore;
use super::store::Store;

/// Opens the store a `state.url` names: `sqlite:PATH` (relative to `root`) or
/// `postgres://…` / `postgresql://…` (optionally `?schema=NAME`). A PostgreSQL store's
/// connections run on the current tokio runtime: open it on the runtime that uses it.
pub async fn open(url: &str, root: &std::path::Path) -> Result<Store> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(PostgresStore::open(url).await?.into());
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StateStoreError::Url(redact_url(url)))?;
    let path = std::path::Path::new(path);
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        root.join(path)
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| StateStoreError::Folder {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(SqliteStore::open(&path)?.into())
}
