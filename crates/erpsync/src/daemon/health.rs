//! Systems down, as their circuit breakers say (the same truth `erpsync status`, `GET
//! /api/systems` and the metric `erpsync_system_up` show): the console's flows page and `GET
//! /api/flows` list them, and each change, noticed after a run or a probe, is logged, sent as
//! an event and noted for the `system_down` / `system_up` notifications.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::core::{Daemon, DaemonEvent};
use crate::redact::redact;

/// A system whose circuit breaker holds it down: calls to it are not sent until a probe
/// gets an answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemDown {
    pub(crate) system: String,
    pub since: Option<DateTime<Utc>>,
    /// Requests in a row that got no response.
    pub(crate) consecutive_failures: u32,
    /// The last of them (redacted).
    pub(crate) error: String,
    /// When the next probe may go out.
    pub(crate) next_probe: Option<DateTime<Utc>>,
}

impl Daemon {
    /// Systems down now, by name, read from their circuit breakers.
    pub fn systems_down(&self) -> BTreeMap<String, SystemDown> {
        let engine = self.engine();
        engine
            .systems
            .iter()
            .filter_map(|(name, sys)| {
                let h = sys.health();
                h.down.then(|| {
                    (
                        name.clone(),
                        SystemDown {
                            system: name.clone(),
                            since: h.down_since,
                            consecutive_failures: h.consecutive_failures,
                            error: h
                                .last_error
                                .as_deref()
                                .map(|e| redact(e).into_owned())
                                .unwrap_or_default(),
                            next_probe: h.next_probe,
                        },
                    )
                })
            })
            .collect()
    }

    /// Probes each system down whose pause has run out, keeps what changed in the state
    /// store (for `erpsync status`) and notices the changes. The daemon calls it every second.
    pub async fn probe_systems(&self) {
        let engine = self.engine();
        let now = self.clock.now();
        for (name, sys) in &engine.systems {
            if sys.next_probe().is_some_and(|at| at <= now) && sys.probe().await {
                tracing::info!(system = %name, "probe answered; the system is up again");
            }
        }
        engine
            .record_system_health(engine.systems.keys().map(String::as_str))
            .await;
        self.note_health();
    }

    /// Compares the breakers with what was noticed last: a system that went down or came up
    /// since is logged, sent as an event and noted for the notifications, once per change.
    pub(super) fn note_health(&self) {
        let down = self.systems_down();
        let exists: Vec<String> = self.engine().systems.keys().cloned().collect();
        let mut changes = Vec::new();
        {
            let mut known = self.down.lock().unwrap_or_else(|e| e.into_inner());
            for system in down.keys() {
                if known.insert(system.clone()) {
                    changes.push(DaemonEvent::SystemDown {
                        system: system.clone(),
                    });
                }
            }
            known.retain(|system| {
                if down.contains_key(system) {
                    return true;
                }
                // A system a reload took out of the project is not news.
                if exists.contains(system) {
                    changes.push(DaemonEvent::SystemUp {
                        system: system.clone(),
                    });
                }
                false
            });
        }
        for e in changes {
            match &e {
                DaemonEvent::SystemDown { system } => {
                    tracing::warn!(system, "system marked down");
                    self.notify_system(system, true);
                }
                DaemonEvent::SystemUp { system } => {
                    tracing::info!(system, "system up again");
                    self.notify_system(system, false);
                }
                _ => {}
            }
            self.emit(e);
        }
    }
}
