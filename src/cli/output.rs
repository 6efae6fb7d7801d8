//! Where the commands print: stdout for reports, stderr for messages, both written so that a
//! reader who stops reading (`erpsync failures list | head -1`) ends the output quietly
//! instead of a panic. The command still finishes its work and exits with its own code.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// Set once stdout's reader has gone: nothing more is written there.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
/// The same for stderr.
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);

/// Output formats of every command that prints a report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people.
    #[default]
    Text,
    /// For tools: one JSON document on stdout.
    Json,
}

/// `--format text|json`, with `--json` kept as its alias.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct FormatArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Same as `--format json`.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
}

impl FormatArgs {
    /// The format asked for.
    pub fn get(&self) -> Format {
        if self.json { Format::Json } else { self.format }
    }

    pub fn is_json(&self) -> bool {
        self.get() == Format::Json
    }
}

/// Writes to stdout; a closed pipe ends stdout's output silently.
pub fn stdout(args: std::fmt::Arguments) {
    write_to(&STDOUT_CLOSED, &mut std::io::stdout().lock(), args);
}

/// Writes to stderr; a closed pipe ends stderr's output silently.
pub fn stderr(args: std::fmt::Arguments) {
    write_to(&STDERR_CLOSED, &mut std::io::stderr().lock(), args);
}

fn write_to(closed: &AtomicBool, w: &mut dyn std::io::Write, args: std::fmt::Arguments) {
    if closed.load(Ordering::Relaxed) {
        return;
    }
    // Any write error means nobody reads any more (a closed pipe, a full disk behind a
    // redirect): stop writing rather than fail the command over its own printing.
    if w.write_fmt(args).and_then(|_| w.flush()).is_err() {
        closed.store(true, Ordering::Relaxed);
    }
}

/// Prints a value as pretty JSON on stdout, secrets masked.
pub fn json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    stdout(format_args!("{}\n", erpsync::redact::redact(&text)));
    Ok(())
}

/// `println!` that ends quietly on a closed pipe.
#[macro_export]
macro_rules! outln {
    () => { $crate::cli::output::stdout(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::cli::output::stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that ends quietly on a closed pipe.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::output::stdout(format_args!($($arg)*)) };
}

/// `eprintln!` that ends quietly on a closed pipe.
#[macro_export]
macro_rules! errln {
    () => { $crate::cli::output::stderr(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::cli::output::stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!` that ends quietly on a closed pipe.
#[macro_export]
macro_rules! errout {
    ($($arg:tt)*) => { $crate::cli::output::stderr(format_args!($($arg)*)) };
}
