//! The plan of a daemon's schedules: the next firing of every flow's schedule and reconcile
//! schedule, kept across reloads for those that did not change.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::compile::{Flow, Project, Schedule};

/// The next firing of every schedule.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// (flow id, is a reconcile) → entry.
    entries: BTreeMap<(String, bool), Entry>,
}

#[derive(Debug)]
struct Entry {
    /// What the entry was computed from (expression and time zone); a reload that changes it
    /// recomputes `next`.
    schedule: Schedule,
    next: Option<DateTime<Utc>>,
}

impl Plan {
    /// Follows the project: new and changed schedules are planned from `now`, unchanged ones
    /// keep their next firing, those of removed or disabled flows are dropped.
    /// `enabled` says whether a flow is on (its switch, else its flow file).
    pub(crate) fn sync(
        &mut self,
        project: &Project,
        enabled: impl Fn(&Flow) -> bool,
        now: DateTime<Utc>,
    ) {
        let mut kept = BTreeMap::new();
        for f in project.flows.iter().filter(|f| enabled(f)) {
            for (reconcile, schedule) in [(false, &f.schedule), (true, &f.reconcile_schedule)] {
                let Some(schedule) = schedule else {
                    continue;
                };
                let key = (f.id.clone(), reconcile);
                let entry = match self.entries.remove(&key) {
                    Some(e) if e.schedule == *schedule => e,
                    _ => Entry {
                        next: schedule.next_after(now),
                        schedule: schedule.clone(),
                    },
                };
                kept.insert(key, entry);
            }
        }
        self.entries = kept;
    }

    /// The schedules due at `now`, each planned again after `now`. Firings missed while the
    /// daemon was busy or asleep are not caught up one by one: one run covers them.
    /// Each comes with the firing it stands for, which every node computes alike.
    pub(super) fn due(&mut self, now: DateTime<Utc>) -> Vec<(String, bool, DateTime<Utc>)> {
        let mut out = Vec::new();
        for ((flow, reconcile), e) in self.entries.iter_mut() {
            if let Some(t) = e.next.filter(|t| *t <= now) {
                out.push((flow.clone(), *reconcile, t));
                e.next = e.schedule.next_after(now);
            }
        }
        out
    }

    /// The next firing of a flow's schedule.
    pub(crate) fn next(&self, flow: &str, reconcile: bool) -> Option<DateTime<Utc>> {
        self.entries
            .get(&(flow.to_string(), reconcile))
            .and_then(|e| e.next)
    }

    /// The earliest next firing.
    pub(crate) fn next_wake(&self) -> Option<DateTime<Utc>> {
        self.entries.values().filter_map(|e| e.next).min()
    }
}
