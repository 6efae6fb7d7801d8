//! The parts of the suite that need something besides Rust, and the switches that let a
//! machine without it skip them. CI has all three and sets none of the switches, so there a
//! missing dependency fails the test instead of skipping it silently.
//!
//! `ERPSYNC_OFFLINE=1` allows skipping all three; each also has a switch of its own.

/// The switch that allows skipping everything below.
pub const OFFLINE: &str = "ERPSYNC_OFFLINE";

fn offline() -> bool {
    std::env::var(OFFLINE).as_deref() == Ok("1")
}

/// Whether the PostgreSQL tests may be skipped when the server is unreachable
/// (`ERPSYNC_SKIP_POSTGRES=1`).
pub fn may_skip_postgres() -> bool {
    offline() || std::env::var("ERPSYNC_SKIP_POSTGRES").as_deref() == Ok("1")
}

/// Whether the Tryton test may be skipped when `python3` is missing (`ERPSYNC_SKIP_TRYTON`
/// set to anything).
pub fn may_skip_tryton() -> bool {
    offline() || std::env::var_os("ERPSYNC_SKIP_TRYTON").is_some()
}

/// Whether the browser test may be skipped when `chromedriver` is missing
/// (`ERPSYNC_SKIP_BROWSER=1`).
pub fn may_skip_browser() -> bool {
    offline() || std::env::var("ERPSYNC_SKIP_BROWSER").as_deref() == Ok("1")
}
