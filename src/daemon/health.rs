//! Systems marked down: a run that could not read a system's listing marks it down, and the
//! next run that reads it again marks it up. The console shows them and notifications tell.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::core::{Daemon, DaemonEvent};
use crate::compile::Flow;
use crate::engine::RunReport;
use crate::redact::redact;

/// A system the daemon could not reach.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemDown {
    pub system: String,
    pub since: DateTime<Utc>,
    /// The flow whose run found it down.
    pub flow: String,
    pub error: String,
}

impl Daemon {
    /// Systems marked down now, by name.
    pub fn systems_down(&self) -> BTreeMap<String, SystemDown> {
        self.down.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Follows a finished run: the system it could not read is down; the systems of a run
    /// that ended well are up.
    pub(super) fn note_health(&self, flow: &Flow, report: &RunReport) {
        let now = self.clock.now();
        let mut changes = Vec::new();
        {
            let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(system) = &report.unreachable {
                if !down.contains_key(system) {
                    let error = report
                        .errors
                        .first()
                        .map(|e| redact(e).into_owned())
                        .unwrap_or_default();
                    down.insert(
                        system.clone(),
                        SystemDown {
                            system: system.clone(),
                            since: now,
                            flow: flow.id.clone(),
                            error,
                        },
                    );
                    changes.push(DaemonEvent::SystemDown {
                        system: system.clone(),
                    });
                }
            } else if report.ok() {
                for system in [&flow.from, &flow.to] {
                    if down.remove(system).is_some() {
                        changes.push(DaemonEvent::SystemUp {
                            system: system.clone(),
                        });
                    }
                }
            }
        }
        for e in changes {
            match &e {
                DaemonEvent::SystemDown { system } => {
                    tracing::warn!(system, flow = %flow.id, "system marked down");
                    self.notify_system(system, true);
                }
                DaemonEvent::SystemUp { system } => {
                    tracing::info!(system, flow = %flow.id, "system up again");
                    self.notify_system(system, false);
                }
                _ => {}
            }
            self.emit(e);
        }
    }
}
