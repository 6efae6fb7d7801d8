//! Logs of every command, on stderr: `-v`/`-q` or `ERPSYNC_LOG` choose what is shown,
//! `--log-format json` gives one JSON object per line with plain values. Targets are the
//! area's word (`engine`, `connector`, `daemon`…), not Rust module paths, in the output and
//! in `ERPSYNC_LOG` (`ERPSYNC_LOG=connector=debug` shows each HTTP request). Colours only on a
//! terminal and never when `NO_COLOR` is set.

use std::fmt::Write as _;
use std::io::IsTerminal as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The areas of erpsync, as log targets.
const AREAS: &[&str] = &[
    "cli",
    "clock",
    "compile",
    "config",
    "connector",
    "daemon",
    "engine",
    "expr",
    "redact",
    "sim",
    "state",
];

/// Logging options, shared by every command.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct LogArgs {
    /// More log lines on stderr: `-v` info, `-vv` debug (each HTTP request), `-vvv` trace.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Fewer log lines: `-q` errors only, `-qq` none.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,
    /// Log format.
    #[arg(long, value_enum, default_value_t, global = true)]
    pub log_format: LogFormat,
}

/// How logs are written (to stderr).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Standard error, written around the progress line (`progress::around`): the formatter
/// writes each event whole, so a log line never lands in the middle of the line drawn.
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        super::progress::around(|| std::io::stderr().write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        super::progress::around(|| std::io::stderr().lock().write_all(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The level a command logs at without `-v`/`-q`: the daemon says what it does (`info`); a
/// one-shot command prints a report and logs only warnings.
pub fn init(args: &LogArgs, default: Level) {
    let filter = match std::env::var("ERPSYNC_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(directives(&spec))
            .unwrap_or_else(|e| {
                crate::errln!("warning: ignoring `ERPSYNC_LOG={spec}`: {e}");
                EnvFilter::new(level_directives(args, default))
            }),
        _ => EnvFilter::new(level_directives(args, default)),
    };
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(|| LogWriter);
    let _ = match args.log_format {
        LogFormat::Text => builder.event_format(TextLine { ansi }).try_init(),
        LogFormat::Json => builder.event_format(JsonLine).try_init(),
    };
}

/// The filter for `-v`/`-q`: erpsync's own events at the chosen level, libraries' warnings.
fn level_directives(args: &LogArgs, default: Level) -> String {
    let base = match default {
        Level::ERROR => 0i8,
        Level::WARN => 1,
        Level::INFO => 2,
        Level::DEBUG => 3,
        Level::TRACE => 4,
    };
    let n = base + args.verbose as i8 - args.quiet as i8;
    let level = match n {
        i8::MIN..=-1 => "off",
        0 => "error",
        1 => "warn",
        2 => "info",
        3 => "debug",
        _ => "trace",
    };
    let libs = if n < 1 { level } else { "warn" };
    format!("{libs},erpsync={level}")
}

/// `ERPSYNC_LOG` with area words turned into module paths (`engine=debug` →
/// `erpsync::engine=debug`).
fn directives(spec: &str) -> String {
    spec.split(',')
        .map(|d| {
            let d = d.trim();
            let (target, rest) = match d.split_once('=') {
                Some((t, l)) => (t, format!("={l}")),
                None => (d, String::new()),
            };
            if AREAS.contains(&target) {
                format!("erpsync::{target}{rest}")
            } else {
                d.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The area word of a target: `erpsync::engine::run::write` → `engine`.
pub fn area(target: &str) -> &str {
    let rest = target.strip_prefix("erpsync::").unwrap_or(target);
    rest.split("::").next().unwrap_or(rest)
}

/// `2026-03-01T10:00:00.123+02:00  INFO engine: run finished flow=stock created=0`.
struct TextLine {
    ansi: bool,
}

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut line = String::new();
        for (k, v) in &fields.values {
            let v = match v {
                serde_json::Value::String(s) if !s.contains(' ') && !s.is_empty() => s.clone(),
                other => other.to_string(),
            };
            let _ = write!(line, " {k}={v}");
        }
        let level = meta.level();
        let (start, end) = match (self.ansi, *level) {
            (false, _) => ("", ""),
            (true, Level::ERROR) => ("\x1b[31m", "\x1b[0m"),
            (true, Level::WARN) => ("\x1b[33m", "\x1b[0m"),
            (true, Level::INFO) => ("\x1b[32m", "\x1b[0m"),
            (true, _) => ("\x1b[2m", "\x1b[0m"),
        };
        let text = format!(
            "{} {start}{level:>5}{end} {}: {}{line}",
            now(),
            area(meta.target()),
            fields.message,
        );
        writeln!(w, "{}", erpsync::redact::redact(&text))
    }
}

/// `{"time":"…","level":"info","target":"engine","message":"run finished","flow":"stock",…}`.
struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut obj = serde_json::Map::new();
        obj.insert("time".into(), now().into());
        obj.insert("level".into(), meta.level().as_str().to_lowercase().into());
        obj.insert("target".into(), area(meta.target()).into());
        obj.insert("message".into(), fields.message.into());
        for (k, v) in fields.values {
            obj.insert(k, v);
        }
        let text = serde_json::Value::Object(obj).to_string();
        writeln!(w, "{}", erpsync::redact::redact(&text))
    }
}

fn now() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

/// An event's fields as plain JSON values: numbers stay numbers, text is not quoted twice.
#[derive(Default)]
struct Fields {
    message: String,
    values: Vec<(String, serde_json::Value)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        if field.name() == "message" {
            self.message = match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
        } else {
            self.values.push((field.name().to_string(), value));
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        // `?value` of a string is its quoted form: keep the string itself.
        let text = match serde_json::from_str::<String>(&text) {
            Ok(s) if text.starts_with('"') => s,
            _ => text,
        };
        self.put(field, text.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_words_become_module_paths_in_the_filter() {
        assert_eq!(
            directives("connector=debug,engine,hyper=warn,info"),
            "erpsync::connector=debug,erpsync::engine,hyper=warn,info"
        );
        assert_eq!(area("erpsync::engine::run::write"), "engine");
        assert_eq!(area("hyper::proto"), "hyper");
    }

    #[test]
    fn verbosity_moves_erpsyncs_level_from_the_commands_default() {
        let args = |verbose, quiet| LogArgs {
            verbose,
            quiet,
            log_format: LogFormat::Text,
        };
        assert_eq!(
            level_directives(&args(0, 0), Level::WARN),
            "warn,erpsync=warn"
        );
        assert_eq!(
            level_directives(&args(2, 0), Level::WARN),
            "warn,erpsync=debug"
        );
        assert_eq!(
            level_directives(&args(0, 1), Level::INFO),
            "warn,erpsync=warn"
        );
        assert_eq!(
            level_directives(&args(0, 2), Level::WARN),
            "off,erpsync=off"
        );
    }
}
