//! What the notifier remembers between checks: per rule, the subjects already alerted and the
//! alerts waiting for the rule's window to end.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Subjects remembered per rule at most (the oldest are forgotten first).
const SEEN_MAX: usize = 10_000;

/// One thing a rule fired for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Alert {
    /// What it is about; the same subject fires once.
    #[serde(skip)]
    pub(super) subject: String,
    pub(crate) flow: Option<String>,
    pub(crate) text: String,
    /// The console page to act on.
    pub(crate) link: String,
}

#[derive(Debug, Default)]
pub(super) struct RuleState {
    /// Subjects already alerted, with when.
    pub(super) seen: BTreeMap<String, DateTime<Utc>>,
    /// Alerts waiting for the rule's window to end.
    pub(super) queue: Vec<Alert>,
    pub(super) last_sent: Option<DateTime<Utc>>,
}

/// What the notifier remembers between checks.
#[derive(Debug, Default)]
pub(crate) struct NotifyState {
    pub(super) rules: BTreeMap<String, RuleState>,
    /// System events since the last check: (system, down?).
    pub(super) systems: Vec<(String, bool, DateTime<Utc>)>,
    /// Failures present when the daemon started, by (id, attempts): not news.
    pub(super) baseline: Option<BTreeSet<(i64, u32)>>,
    /// When the daemon started: a flow without a successful run counts from here.
    pub(super) started: Option<DateTime<Utc>>,
}

impl RuleState {
    pub(super) fn fire(&mut self, alert: Alert, now: DateTime<Utc>) {
        if self.seen.contains_key(&alert.subject) {
            return;
        }
        self.seen.insert(alert.subject.clone(), now);
        if self.seen.len() > SEEN_MAX
            && let Some(oldest) = self
                .seen
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| k.clone())
        {
            self.seen.remove(&oldest);
        }
        self.queue.push(alert);
    }
}
