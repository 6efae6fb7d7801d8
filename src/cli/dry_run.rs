//! `erpsync dry-run FLOWS`: read live data, decide, and print what a run would do, with the
//! field-level changes. Nothing is written anywhere: no request other than reads, no state.
//! It exits 1 when it predicts failures, so it can gate a change in CI.

use std::process::ExitCode;

use std::sync::{Arc, Mutex};

use super::common::{
    IndexMemoryArgs, ProjectArgs, RecordLines, engine, load_project, one_shot_runtime,
    open_state_read_only, print_report, record_text, reports_json, select_flows,
};
use super::output::FormatArgs;
use super::progress::{Printer, Progress};
use erpsync::engine::{RecordReport, RecordSink, RunOptions, RunReport};

/// Arguments of `erpsync dry-run`.
#[derive(Debug, clap::Args)]
pub struct DryRunArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Only these flows; repeatable.
    #[arg(long = "flow")]
    pub flows: Vec<String>,
    /// Only the records with these keys (e.g. an order number); repeatable.
    #[arg(long = "key", value_name = "KEY")]
    pub keys: Vec<String>,
    /// Plan the reconciliation (full comparison) instead of the incremental run.
    #[arg(long)]
    pub reconcile: bool,
    #[command(flatten)]
    pub format: FormatArgs,
    #[command(flatten)]
    pub index_memory: IndexMemoryArgs,
    /// Also list records that would be left alone.
    #[arg(long)]
    pub all: bool,
    /// The longest a system may make the dry run wait (a `Retry-After`, a lock-out), in
    /// seconds; a longer wait fails the read instead. Waits over 5 s are always announced.
    #[arg(long, value_name = "SECS")]
    pub max_wait: Option<u64>,
}

pub fn run(args: DryRunArgs) -> anyhow::Result<ExitCode> {
    let project = load_project(&args.project.paths)?;
    let flows = select_flows(&project, &args.flows)?;
    let rt = one_shot_runtime()?;
    let store = rt.block_on(open_state_read_only(&args.project, &project))?;
    // Without `--flow`, what `run --once` would run: switches set in the console count.
    let flows = if args.flows.is_empty() {
        project
            .select_with(&[], &rt.block_on(erpsync::state::switches(&store))?)
            .map_err(anyhow::Error::msg)?
    } else {
        flows
    };
    // One plan for every flow: what an earlier flow would bind, the next one sees.
    let engine = engine(project.clone(), store)?
        .planning()
        .one_shot(args.max_wait.map(std::time::Duration::from_secs))
        .index_memory(args.index_memory.bytes());
    let progress = Progress::start();
    let opts = RunOptions {
        dry_run: true,
        reconcile: args.reconcile,
        force: !args.flows.is_empty(),
        keys: (!args.keys.is_empty()).then(|| args.keys.clone()),
        progress: progress.counter(),
        ..Default::default()
    };
    let json = args.format.is_json();
    let lines = if args.all {
        RecordLines::All
    } else {
        RecordLines::Changes
    };
    // Each record is printed as it is planned, not kept: a dry run of a large catalogue
    // shows its first lines at once and holds only its totals.
    let out = Arc::new(Mutex::new(Stream::new(json, lines, progress.printer())));
    let opts = RunOptions {
        sink: Some(RecordSink::new({
            let out = out.clone();
            move |rec| lock(&out).record(&rec)
        })),
        ..opts
    };
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    let flows: Vec<_> = flows
        .into_iter()
        .filter(|f| !args.reconcile || f.reconcile_schedule.is_some())
        .collect();
    for (i, flow) in flows.iter().enumerate() {
        // The plan keeps only what the flows still to be planned can read.
        let later: Vec<&str> = flows[i + 1..].iter().map(|f| f.id.as_str()).collect();
        engine.plan_ahead(&flow.id, &later);
        progress.flow(&flow.id);
        lock(&out).flow(&flow.id);
        let result = rt.block_on(engine.run(&flow.id, &opts));
        let mut out = lock(&out);
        match result {
            Ok(r) => {
                out.finish_run(&r);
                reports.push(r);
            }
            Err(e) => {
                out.failed_run(&flow.id, &e.to_string());
                errors.push((flow.id.clone(), e.to_string()));
            }
        }
    }
    progress.finish();
    let doc = reports_json(true, &reports, &errors);
    lock(&out).finish(&doc);
    Ok(if doc["ok"] == true {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FAILED)
    })
}

fn lock(out: &Mutex<Stream>) -> std::sync::MutexGuard<'_, Stream> {
    out.lock().unwrap_or_else(|e| e.into_inner())
}

/// The dry run's output, written as the records come: for people, each record's lines and
/// then the flow's totals; for tools, the same JSON document `run --once --format json`
/// prints, opened at the start and each run's `records` filled in as they are planned, the
/// rest of the run (its totals, status, times) after them and `ok` at the very end.
struct Stream {
    json: bool,
    lines: RecordLines,
    printer: Printer,
    /// The flow being planned.
    flow: String,
    /// Whether the JSON object of the flow being planned is open (its first record came).
    open: bool,
    /// Records written in the open run.
    records: u64,
    /// Runs written to the JSON document.
    runs: u64,
    /// JSON of whole records not written yet: written once `JSON_CHUNK` bytes wait, and at
    /// the end of each run. A write per record cost a system call per record (stdout is
    /// line-buffered), about 7% of a 100,000-record plan.
    pending: String,
}

/// Bytes of planned records the JSON output gathers before writing them.
const JSON_CHUNK: usize = 64 << 10;

impl Stream {
    fn new(json: bool, lines: RecordLines, printer: Printer) -> Self {
        if json {
            out(r#"{
  "dry_run": true,
  "runs": ["#);
        }
        Stream {
            json,
            lines,
            printer,
            flow: String::new(),
            open: false,
            records: 0,
            runs: 0,
            pending: String::new(),
        }
    }

    /// Adds whole records' JSON to the output, written once a chunk's worth waits.
    fn push(&mut self, text: &str) {
        self.pending.push_str(text);
        if self.pending.len() >= JSON_CHUNK {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            out(&self.pending);
            self.pending.clear();
        }
    }

    fn flow(&mut self, flow: &str) {
        self.flow = flow.to_string();
    }

    fn record(&mut self, rec: &RecordReport) {
        if !self.json {
            if let Some(text) = record_text(rec, self.lines) {
                self.printer.suspend(|| out(&text));
            }
            return;
        }
        self.open_run();
        let sep = if self.records == 0 { "" } else { "," };
        self.records += 1;
        self.push(&format!("{sep}\n        {}", indented(rec, 8)));
    }

    /// Starts the JSON object of the flow being planned.
    fn open_run(&mut self) {
        if self.open {
            return;
        }
        let sep = if self.runs == 0 { "" } else { "," };
        let flow = indented(&self.flow, 6);
        self.push(&format!(
            "{sep}\n    {{\n      \"flow\": {flow},\n      \"records\": ["
        ));
        self.open = true;
        self.records = 0;
    }

    /// The flow's run is planned: its totals follow its records.
    fn finish_run(&mut self, r: &RunReport) {
        if !self.json {
            self.printer.suspend(|| print_report(r, self.lines));
            return;
        }
        // Lines the engine kept rather than streamed (none today) still belong to the run.
        for rec in &r.records {
            self.record(rec);
        }
        self.open_run();
        let mut text = String::from(if self.records == 0 { "]" } else { "\n      ]" });
        if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(r) {
            for (k, v) in fields {
                if k == "flow" || k == "records" {
                    continue;
                }
                text.push_str(&format!(
                    ",\n      {}: {}",
                    indented(&k, 6),
                    indented(&v, 6)
                ));
            }
        }
        text.push_str("\n    }");
        self.push(&text);
        self.flush();
        self.open = false;
        self.runs += 1;
    }

    /// The flow could not be planned. A run whose records were already written gets its
    /// error as its status; one with none stays out of `runs`, as before (its error is in
    /// the document's `errors`).
    fn failed_run(&mut self, flow: &str, error: &str) {
        if !self.json {
            self.printer.suspend(|| {
                crate::errln!("{flow}: {}", erpsync::redact::redact(error));
            });
            return;
        }
        if self.open {
            let r = RunReport {
                flow: flow.to_string(),
                status: "error".into(),
                dry_run: true,
                errors: vec![error.to_string()],
                ..Default::default()
            };
            self.finish_run(&r);
        }
    }

    /// Ends the output: the document's `ok` and the flows that could not run.
    fn finish(&mut self, doc: &serde_json::Value) {
        if !self.json {
            crate::outln!("dry run: nothing was written");
            return;
        }
        self.flush();
        let close = if self.runs == 0 { "]" } else { "\n  ]" };
        out(&format!(
            "{close},\n  \"ok\": {},\n  \"errors\": {}\n}}\n",
            doc["ok"],
            indented(&doc["errors"], 2)
        ));
    }
}

impl Drop for Stream {
    /// What was planned is written even when the command ends early.
    fn drop(&mut self) {
        self.flush();
    }
}

/// A value as pretty JSON whose lines after the first are indented by `by` spaces, to sit
/// inside the document at that depth: what `serde_json::to_string_pretty` writes, with `by`
/// spaces after every line break, written in one pass (pretty text whose line breaks were
/// then replaced cost 1.3% more of a 25,000-record dry run's instructions).
fn indented<T: serde::Serialize + ?Sized>(value: &T, by: usize) -> String {
    let mut text = Vec::with_capacity(256);
    let nested = Nested {
        base: by,
        level: 0,
        has_value: false,
    };
    let mut ser = serde_json::Serializer::with_formatter(&mut text, nested);
    if value.serialize(&mut ser).is_err() {
        return "null".into();
    }
    // The serialiser writes only what it was given as `str` and ASCII punctuation.
    String::from_utf8(text).unwrap_or_else(|_| "null".into())
}

/// `serde_json`'s pretty layout (two spaces a level, `": "` after keys, empty arrays and
/// objects as `[]` and `{}`) for a value whose every line after the first starts `base`
/// spaces in.
struct Nested {
    base: usize,
    level: usize,
    has_value: bool,
}

impl Nested {
    fn line<W: ?Sized + std::io::Write>(&self, w: &mut W) -> std::io::Result<()> {
        const SPACES: &[u8; 64] = &[b' '; 64];
        w.write_all(b"\n")?;
        let mut n = self.base + 2 * self.level;
        while n > 0 {
            let step = n.min(SPACES.len());
            w.write_all(&SPACES[..step])?;
            n -= step;
        }
        Ok(())
    }

    fn open<W: ?Sized + std::io::Write>(&mut self, w: &mut W, c: &[u8]) -> std::io::Result<()> {
        self.level += 1;
        self.has_value = false;
        w.write_all(c)
    }

    fn close<W: ?Sized + std::io::Write>(&mut self, w: &mut W, c: &[u8]) -> std::io::Result<()> {
        self.level -= 1;
        if self.has_value {
            self.line(w)?;
        }
        w.write_all(c)
    }

    fn item<W: ?Sized + std::io::Write>(&self, w: &mut W, first: bool) -> std::io::Result<()> {
        if !first {
            w.write_all(b",")?;
        }
        self.line(w)
    }
}

impl serde_json::ser::Formatter for Nested {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"[")
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"]")
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(w, first)
    }

    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"{")
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"}")
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(w, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

/// Writes to stdout, secrets masked.
fn out(text: &str) {
    super::output::stdout(format_args!("{}", erpsync::redact::redact(text)));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `indented` wrote before: the pretty text with its line breaks indented.
    fn pretty_then_indented(value: &serde_json::Value, by: usize) -> String {
        let text = serde_json::to_string_pretty(value).unwrap();
        text.replace('\n', &format!("\n{}", " ".repeat(by)))
    }

    #[test]
    fn records_are_indented_as_the_pretty_text_with_its_lines_moved_in() {
        let values = [
            serde_json::json!(null),
            serde_json::json!("line\nbreak \"quoted\" ă"),
            serde_json::json!(12.5),
            serde_json::json!([]),
            serde_json::json!({}),
            serde_json::json!([[], {}, [1, [2, [3, {}]]], {"a": []}]),
            serde_json::json!({
                "key": "SKU-1",
                "action": "update",
                "changes": [{"field": "price", "from": 10.0, "to": 12.5}],
                "record": {"name": "Scaun", "tags": ["a", "b"], "empty": {}, "none": null},
                "deep": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": [1, 2]}}}}}}}}
            }),
        ];
        for v in &values {
            for by in [0, 2, 6, 8, 70] {
                assert_eq!(indented(v, by), pretty_then_indented(v, by), "{v} at {by}");
            }
        }
        assert_eq!(indented("flow-id", 6), "\"flow-id\"");
    }
}
