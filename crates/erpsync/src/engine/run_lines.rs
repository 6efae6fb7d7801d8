//! Keeps a run's per-record report in the state store once the run is over, bounded (see
//! `state::operator`), so the console can show what a past run did to each record.

use super::{Engine, RunReport};
use crate::redact::redact;
use crate::state::operator::{RUN_LINES_PER_RUN, RunLine, line_rank};

/// The lines of a report to keep: all of them up to the bound, else the ones a person looks
/// for first (failures, parked records, writes), in the order the run made them.
pub(crate) fn lines_of(run_id: i64, report: &RunReport) -> Vec<RunLine> {
    let mut lines: Vec<RunLine> = report
        .records
        .iter()
        .map(|r| RunLine {
            run_id,
            flow: report.flow.clone(),
            key: r.key.clone(),
            decision: serde_json::to_value(r.decision)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            target: r.target.clone(),
            changes: (!r.changes.is_empty())
                .then(|| serde_json::to_value(&r.changes).ok())
                .flatten()
                .map(|v| crate::redact::redact_json(&v)),
            reason: r.reason.as_deref().map(|s| redact(s).into_owned()),
        })
        .collect();
    if lines.len() > RUN_LINES_PER_RUN {
        let mut order: Vec<usize> = (0..lines.len()).collect();
        order.sort_by_key(|&i| line_rank(&lines[i].decision));
        let mut kept: Vec<usize> = order.into_iter().take(RUN_LINES_PER_RUN).collect();
        kept.sort_unstable();
        let mut slots: Vec<Option<RunLine>> = lines.into_iter().map(Some).collect();
        lines = kept.into_iter().filter_map(|i| slots[i].take()).collect();
    }
    lines
}

/// Stores them; a store that refuses costs the report, not the run.
pub(crate) async fn keep(engine: &Engine, run_id: i64, report: &RunReport) {
    let lines = lines_of(run_id, report);
    if lines.is_empty() {
        return;
    }
    if let Err(e) = engine.store.runs.put_run_lines(&lines).await {
        tracing::warn!(flow = %report.flow, run = run_id, error = %redact(&e.to_string()), "cannot keep the run's per-record report");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Decision, RecordReport};

    fn rec(key: &str, decision: Decision) -> RecordReport {
        RecordReport {
            key: key.to_string(),
            decision,
            target: None,
            changes: Vec::new(),
            reason: None,
            steps: Vec::new(),
        }
    }

    #[test]
    fn a_long_report_keeps_failures_and_writes_first_in_run_order() {
        let mut report = RunReport {
            flow: "products".into(),
            ..Default::default()
        };
        for i in 0..RUN_LINES_PER_RUN {
            report.records.push(rec(&format!("S{i}"), Decision::Skip));
        }
        report.records.push(rec("F1", Decision::Failed));
        report.records.push(rec("C1", Decision::Create));
        let lines = lines_of(7, &report);
        assert_eq!(lines.len(), RUN_LINES_PER_RUN);
        let tail: Vec<&str> = lines.iter().rev().take(2).map(|l| l.key.as_str()).collect();
        assert_eq!(tail, ["C1", "F1"]);
        assert_eq!(lines[0].key, "S0");
        assert_eq!(lines[0].decision, "skip");
        assert!(lines.iter().all(|l| l.run_id == 7 && l.flow == "products"));
    }
}
