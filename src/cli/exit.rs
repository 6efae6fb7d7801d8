//! Exit codes: 0 ok, 1 a run failed or has failed records, 2 usage, 78 invalid flow files;
//! and the one-line error text the commands end with.

/// Exit code of a run that failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of a command used wrongly.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of invalid flow files (EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

/// An error and its causes on one line, each said once: a cause whose text its parent
/// already carries (drivers often repeat their source) is left out.
pub fn error_chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        let tail = text.rsplit(": ").next().unwrap_or(&text);
        if out.contains(&text) || out.contains(tail) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
