//! What the integration tests share, so each file states its scenario instead of rebuilding
//! the rig: the repository and an HTTP client (here), the parts of the suite a machine may
//! skip (`offline`), the demo project, its variables and its variants (`project`),
//! simulators on one clock and confirmed orders (`sims`), an engine over the demo project
//! (`harness`), the real binary over a project on disk (`binary`), a daemon and its HTTP
//! server (`daemon`), a PostgreSQL schema of a test's own (`postgres`) and a command line on a
//! pseudo-terminal (`terminal`).

pub mod binary;
pub mod daemon;
pub mod harness;
pub mod offline;
pub mod postgres;
pub mod project;
pub mod sims;
pub mod terminal;

use std::path::PathBuf;
use std::time::Duration;

/// What a finished command wrote, stdout then stderr, as text.
pub fn stdout_and_stderr(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Installs the TLS provider the crate and reqwest use; every test that starts a daemon, an
/// engine or a client calls it first (installing twice is harmless).
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client whose requests give up after `timeout`.
pub fn http(timeout: Duration) -> reqwest::Client {
    install_tls_provider();
    reqwest::Client::builder().timeout(timeout).build().unwrap()
}
