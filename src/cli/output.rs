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

/// The width of the terminal stdout is, or `None` when stdout is not a terminal (a pipe, a
/// file) or its size is not known. Read once a process: a dry run asks for every line of
/// changes it prints, and a command's output keeps one layout.
pub fn screen_width() -> Option<usize> {
    static WIDTH: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *WIDTH.get_or_init(read_screen_width)
}

#[cfg(unix)]
fn read_screen_width() -> Option<usize> {
    use std::io::IsTerminal as _;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    // SAFETY: TIOCGWINSZ fills the `winsize` it is given and touches nothing else; stdout is
    // a terminal, so the call is meaningful, and a failure leaves the zeroed size.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

#[cfg(not(unix))]
fn read_screen_width() -> Option<usize> {
    None
}

/// A line of totals (`read 206, created 6, …`) as a terminal of `width` columns shows it:
/// as it is when it fits, else broken into lines that fit, the ones after the first
/// indented by `indent` (where the totals start); its first `head` columns (a flow's name
/// and its padding) stay as they are. It breaks after a comma or semicolon; within a part
/// too long for a row of its own, after a colon, then between words. A terminal left to
/// wrap a long line cuts it anywhere (`skip` / `ped 0`); a pipe or a file gets the line
/// whole (see `shown`), so scripts and logs see one line per flow.
pub fn fit(line: &str, head: usize, indent: usize, width: usize) -> String {
    let len = |s: &str| s.chars().count();
    if len(line) <= width {
        return line.to_string();
    }
    // Past half the screen, the indent would leave too little room for the totals.
    let indent = if indent <= width / 2 { indent } else { 4 };
    let room = width.saturating_sub(indent);
    // The flow's name and its padding stay as they are, with the first total after them.
    let at = line.char_indices().nth(head).map_or(line.len(), |(i, _)| i);
    let (head, totals) = line.split_at(at);
    // A part too long for a row of its own breaks after a colon, then between words.
    let too_long = |s: &str| len(s.trim_start()) > room;
    let units = totals.split_inclusive([',', ';']).flat_map(|part| {
        let by_colon = too_long(part);
        part.split_inclusive(move |c| by_colon && c == ':')
            .flat_map(move |piece| {
                let words = too_long(piece);
                piece.split_inclusive(move |c| words && c == ' ')
            })
    });
    let mut out = String::with_capacity(line.len() + 64);
    let mut current = head.to_string();
    for (i, unit) in units.enumerate() {
        if i > 0 && len(&current) + len(unit.trim_end()) > width {
            out.push_str(current.trim_end());
            out.push('\n');
            current = " ".repeat(indent);
            current.push_str(unit.trim_start());
        } else {
            current.push_str(unit);
        }
    }
    out.push_str(current.trim_end());
    out
}

/// `line` as stdout shows it: on a terminal narrower than it, broken by `fit` (its first
/// `head` columns kept, the rows after the first indented by `indent`); elsewhere whole.
pub fn shown(line: &str, head: usize, indent: usize) -> String {
    match screen_width() {
        Some(width) => fit(line, head, indent, width),
        None => line.to_string(),
    }
}

/// A table as a terminal `width` columns wide shows it when the table's fixed layout (the
/// one a pipe gets) is wider: each column as wide as its widest cell, two spaces apart, and
/// the columns that do not fit beside the first moved to a table of their own under it, the
/// first column (what each row is about) repeated. Columns listed in `right` are aligned
/// right. Each row ends with a line break.
pub fn narrow_table(
    header: &[&str],
    rows: &[Vec<String>],
    right: &[usize],
    width: usize,
) -> String {
    fn cell(row: &[String], c: usize) -> &str {
        row.get(c).map_or("", String::as_str)
    }
    let len = |s: &str| s.chars().count();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            std::iter::once(&header)
                .chain(rows)
                .map(|r| len(cell(r, c)))
                .max()
                .unwrap_or(0)
        })
        .collect();
    // The columns after the first, in groups that fit beside it.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group = Vec::new();
    let mut used = widths[0];
    for (c, w) in widths.iter().enumerate().skip(1) {
        if !group.is_empty() && used + 2 + w > width {
            groups.push(std::mem::take(&mut group));
            used = widths[0];
        }
        group.push(c);
        used += 2 + w;
    }
    groups.push(group);
    let mut out = String::new();
    for (g, columns) in groups.iter().enumerate() {
        if g > 0 {
            out.push('\n');
        }
        for row in std::iter::once(&header).chain(rows) {
            let mut line = format!("{:<w$}", cell(row, 0), w = widths[0]);
            for &c in columns {
                let text = cell(row, c);
                if right.contains(&c) {
                    line.push_str(&format!("  {text:>w$}", w = widths[c]));
                } else {
                    line.push_str(&format!("  {text:<w$}", w = widths[c]));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::fit;

    const DEMO: &str = "  products                     read 206, created 6, updated 0, adopted 200, \
                        skipped 0, conflicts 0, failed 0";
    const REQUIRED: &str = "  orders_to_erp                read 12, created 6, updated 0, adopted 0, \
                            skipped 0, conflicts 0, failed 0, filtered 6; required first through \
                            `customers_to_erp`: created 6";

    /// The lines of `shown` joined back as they were broken (a line break and its indent
    /// stand for the one space they replaced).
    fn joined(shown: &str) -> String {
        let mut lines = shown.lines();
        let mut out = lines.next().unwrap_or_default().to_string();
        for line in lines {
            out.push(' ');
            out.push_str(line.trim_start());
        }
        out
    }

    #[test]
    fn a_table_too_wide_for_the_terminal_is_split_under_its_first_column() {
        let header = ["flow", "enabled", "schedule", "next run", "failures"];
        let rows = vec![
            vec![
                "customers_to_erp".into(),
                "yes".into(),
                "manual".into(),
                "-".into(),
                "0".into(),
            ],
            vec![
                "stock".into(),
                "no".into(),
                "*/5 * * * *".into(),
                "2026-12-05 15:35 +00:00".into(),
                "12".into(),
            ],
        ];
        let shown = super::narrow_table(&header, &rows, &[4], 64);
        assert_eq!(
            shown,
            "flow              enabled  schedule     next run\n\
             customers_to_erp  yes      manual       -\n\
             stock             no       */5 * * * *  2026-12-05 15:35 +00:00\n\
             \n\
             flow              failures\n\
             customers_to_erp         0\n\
             stock                   12\n"
        );
        for line in shown.lines() {
            assert!(line.chars().count() <= 64, "{line:?}");
        }
        // Wide enough, one table; a column wider than the screen still gets a table.
        assert_eq!(
            super::narrow_table(&header, &rows, &[4], 200)
                .matches("flow ")
                .count(),
            1
        );
        assert_eq!(
            super::narrow_table(&header, &rows, &[4], 10)
                .matches("flow ")
                .count(),
            4
        );
    }

    #[test]
    fn a_line_that_fits_is_shown_as_it_is() {
        assert_eq!(fit(DEMO, 31, 31, 120), DEMO);
        assert_eq!(fit(DEMO, 31, 31, DEMO.chars().count()), DEMO);
    }

    #[test]
    fn a_long_line_breaks_between_totals_into_lines_that_fit() {
        let shown = fit(DEMO, 31, 31, 80);
        assert_eq!(
            shown,
            "  products                     read 206, created 6, updated 0, adopted 200,\n\
             \x20                              skipped 0, conflicts 0, failed 0"
        );
        let shown = fit(REQUIRED, 31, 31, 80);
        for line in shown.lines() {
            assert!(line.chars().count() <= 80, "{line:?} in\n{shown}");
        }
        assert!(
            shown
                .lines()
                .skip(1)
                .all(|l| l.starts_with(&" ".repeat(31)) && !l[31..].starts_with(' ')),
            "{shown}"
        );
        assert_eq!(joined(&shown), REQUIRED);
        // Too long for a row, the part about required records breaks after its colon:
        // its totals stay whole.
        assert!(
            shown
                .lines()
                .any(|l| l.trim() == "required first through `customers_to_erp`:"),
            "{shown}"
        );
        assert!(shown.lines().any(|l| l.trim() == "created 6"), "{shown}");
    }

    #[test]
    fn every_width_keeps_each_total_whole_and_loses_nothing() {
        for line in [DEMO, REQUIRED] {
            for width in 40..=160 {
                let shown = fit(line, 31, 31, width);
                assert_eq!(joined(&shown), line, "width {width}:\n{shown}");
                // A line is over the width only when it is a single word too long for it.
                for l in shown.lines().skip(1) {
                    let over = l.chars().count() > width;
                    assert!(
                        !over || l.split_whitespace().count() == 1,
                        "width {width}: {l:?}\n{shown}"
                    );
                }
                assert!(shown.lines().next().unwrap().chars().count() <= width.max(40));
                // An indent of more than half the screen gives way to a small one.
                if width < 62 {
                    assert!(
                        shown
                            .lines()
                            .skip(1)
                            .all(|l| l.starts_with("    ") && !l.starts_with(&" ".repeat(5))),
                        "width {width}:\n{shown}"
                    );
                }
            }
        }
    }
}
