//! Prometheus metrics of the daemon: counters the daemon bumps as runs and deliveries happen,
//! rendered in the text exposition format together with the connector's per-system counters
//! and the failures pending in the state store.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::engine::{Engine, RunReport};

/// Upper bounds of the run-duration histogram, in seconds: from a scoped webhook run to a
/// full catalogue crawl.
const DURATION_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0];

/// Counters the daemon keeps; label sets are rendered once, when first bumped.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Families>,
}

#[derive(Debug, Default)]
struct Families {
    /// Family name → rendered label set → value.
    counters: BTreeMap<&'static str, BTreeMap<String, f64>>,
    /// Flow → run-duration histogram.
    durations: BTreeMap<String, Histogram>,
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

/// Help text and type of each family, in rendering order.
const FAMILIES: &[(&str, &str)] = &[
    (
        "erpsync_runs_total",
        "Runs finished, by flow, kind and status.",
    ),
    (
        "erpsync_runs_skipped_total",
        "Scheduled runs not started because the flow was still running.",
    ),
    (
        "erpsync_records_total",
        "Records handled by runs, by flow and decision.",
    ),
    (
        "erpsync_webhooks_total",
        "Incoming webhook deliveries, by webhook and outcome.",
    ),
    ("erpsync_reloads_total", "Configuration reloads, by result."),
];

impl Metrics {
    fn add(&self, family: &'static str, labels: &[(&str, &str)], v: f64) {
        let mut f = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *f.counters
            .entry(family)
            .or_default()
            .entry(render_labels(labels))
            .or_default() += v;
    }

    /// Counts a finished run and its records, and times it.
    /// `Err(kind)` is a run that could not be carried out at all.
    pub(crate) fn run_finished(&self, flow: &str, result: Result<&RunReport, &str>, seconds: f64) {
        let (kind, status) = match result {
            Ok(r) => (r.kind.as_str(), status_of(r)),
            Err(kind) => (kind, "error"),
        };
        self.add(
            "erpsync_runs_total",
            &[("flow", flow), ("kind", kind), ("status", status)],
            1.0,
        );
        if let Ok(r) = result {
            let c = &r.counts;
            for (decision, n) in [
                ("create", c.created),
                ("update", c.updated),
                ("adopt", c.adopted),
                ("skip", c.skipped),
                ("conflict", c.conflicts),
                ("park", c.parked),
                ("locked", c.locked),
                ("filtered", c.filtered),
                ("failed", c.failed),
                ("corrected", c.corrected),
                ("drifted", c.drifted),
            ] {
                if n > 0 {
                    self.add(
                        "erpsync_records_total",
                        &[("flow", flow), ("decision", decision)],
                        n as f64,
                    );
                }
            }
        }
        let mut f = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let h = f.durations.entry(flow.to_string()).or_default();
        if h.buckets.is_empty() {
            h.buckets = vec![0; DURATION_BUCKETS.len()];
        }
        for (i, le) in DURATION_BUCKETS.iter().enumerate() {
            if seconds <= *le {
                h.buckets[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// Counts a scheduled run skipped because the previous one was still going.
    pub(crate) fn run_skipped(&self, flow: &str) {
        self.add("erpsync_runs_skipped_total", &[("flow", flow)], 1.0);
    }

    /// Counts a webhook delivery by what became of it.
    pub(crate) fn webhook(&self, name: &str, outcome: &str) {
        self.add(
            "erpsync_webhooks_total",
            &[("webhook", name), ("outcome", outcome)],
            1.0,
        );
    }

    /// Counts a reload attempt.
    pub(crate) fn reload(&self, result: &str) {
        self.add("erpsync_reloads_total", &[("result", result)], 1.0);
    }

    /// The value of one series, for tests and the admin API.
    pub fn value(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        let f = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f.counters
            .get(family)
            .and_then(|s| s.get(&render_labels(labels)))
            .copied()
            .unwrap_or(0.0)
    }

    /// Everything in the Prometheus text format. `pending` is the number of failures waiting
    /// per flow; `in_flight` the runs going on now.
    pub(crate) fn render(
        &self,
        engine: &Engine,
        pending: &BTreeMap<String, u64>,
        in_flight: usize,
    ) -> String {
        let mut out = String::new();
        {
            let f = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            for (name, help) in FAMILIES {
                header(&mut out, name, help, "counter");
                if let Some(series) = f.counters.get(name) {
                    for (labels, v) in series {
                        let _ = writeln!(out, "{name}{labels} {v}");
                    }
                }
            }
            header(
                &mut out,
                "erpsync_run_duration_seconds",
                "Duration of runs, by flow.",
                "histogram",
            );
            for (flow, h) in &f.durations {
                for (i, le) in DURATION_BUCKETS.iter().enumerate() {
                    let labels = render_labels(&[("flow", flow), ("le", &le.to_string())]);
                    let _ = writeln!(
                        out,
                        "erpsync_run_duration_seconds_bucket{labels} {}",
                        h.buckets[i]
                    );
                }
                let inf = render_labels(&[("flow", flow), ("le", "+Inf")]);
                let _ = writeln!(out, "erpsync_run_duration_seconds_bucket{inf} {}", h.count);
                let l = render_labels(&[("flow", flow)]);
                let _ = writeln!(out, "erpsync_run_duration_seconds_sum{l} {}", h.sum);
                let _ = writeln!(out, "erpsync_run_duration_seconds_count{l} {}", h.count);
            }
        }
        header(
            &mut out,
            "erpsync_runs_in_flight",
            "Runs going on now.",
            "gauge",
        );
        let _ = writeln!(out, "erpsync_runs_in_flight {in_flight}");
        header(
            &mut out,
            "erpsync_failures_pending",
            "Records kept in the failure store for retry, by flow.",
            "gauge",
        );
        for (flow, n) in pending {
            let _ = writeln!(
                out,
                "erpsync_failures_pending{} {n}",
                render_labels(&[("flow", flow)])
            );
        }
        let stats: Vec<_> = engine
            .systems
            .iter()
            .map(|(name, s)| (name.as_str(), s.stats().snapshot()))
            .collect();
        header(
            &mut out,
            "erpsync_http_requests_total",
            "HTTP requests to systems, by system and status class (`error`: no response).",
            "counter",
        );
        for (name, s) in &stats {
            for (class, n) in [
                ("2xx", s.responses_2xx),
                ("3xx", s.responses_3xx),
                ("4xx", s.responses_4xx),
                ("5xx", s.responses_5xx),
                ("error", s.transport_errors),
            ] {
                let labels = render_labels(&[("system", name), ("class", class)]);
                let _ = writeln!(out, "erpsync_http_requests_total{labels} {n}");
            }
        }
        for (family, help, pick) in [
            (
                "erpsync_http_retries_total",
                "Requests sent again after a failure, by system.",
                (|s: &crate::connector::StatsSnapshot| s.retries as f64)
                    as fn(&crate::connector::StatsSnapshot) -> f64,
            ),
            (
                "erpsync_rate_limit_waits_total",
                "Waits for a system's rate-limit budget, Retry-After or lock-out.",
                |s| s.rate_limit_waits as f64,
            ),
            (
                "erpsync_rate_limit_wait_seconds_total",
                "Time spent in those waits.",
                |s| s.rate_limit_wait_ms as f64 / 1000.0,
            ),
            (
                "erpsync_http_in_doubt_total",
                "Writes whose outcome was unknown, by system.",
                |s| s.in_doubt as f64,
            ),
        ] {
            header(&mut out, family, help, "counter");
            for (name, s) in &stats {
                let labels = render_labels(&[("system", name)]);
                let _ = writeln!(out, "{family}{labels} {}", pick(s));
            }
        }
        header(
            &mut out,
            "erpsync_system_up",
            "1 while a system answers, 0 while its circuit breaker holds it down.",
            "gauge",
        );
        for (name, sys) in &engine.systems {
            let labels = render_labels(&[("system", name)]);
            let up = if sys.is_down() { 0 } else { 1 };
            let _ = writeln!(out, "erpsync_system_up{labels} {up}");
        }
        out
    }
}

/// The status a run is filed under: `ok`, `partial` (some records failed) or `error`.
pub(crate) fn status_of(r: &RunReport) -> &'static str {
    if !r.ok() {
        "error"
    } else if r.counts.failed > 0 {
        "partial"
    } else {
        "ok"
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            render_labels(&[("flow", "a\"b\\c\nd"), ("k", "v")]),
            r#"{flow="a\"b\\c\nd",k="v"}"#
        );
        assert_eq!(render_labels(&[]), "");
    }

    #[test]
    fn counters_add_up_per_label_set() {
        let m = Metrics::default();
        m.run_skipped("stock");
        m.run_skipped("stock");
        m.run_skipped("orders");
        assert_eq!(
            m.value("erpsync_runs_skipped_total", &[("flow", "stock")]),
            2.0
        );
        assert_eq!(
            m.value("erpsync_runs_skipped_total", &[("flow", "orders")]),
            1.0
        );
    }
}
