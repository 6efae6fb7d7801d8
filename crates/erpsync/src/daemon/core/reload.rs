//! Reloading the flow files: checked again and, when valid, put in force with the systems whose
//! spec did not change kept as they run.

use std::sync::Arc;

use super::{Daemon, DaemonEvent};
use crate::daemon::reload::ReloadChanges;
use crate::daemon::switches::read_switches;
use crate::engine::{Engine, EngineBuildError};
use crate::redact::redact;

/// A reload that was refused; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ConfigReloadError {
    #[error("the new flow files have {count} problem(s); keeping the running configuration")]
    Invalid { count: usize, diagnostics: String },
    #[error("the new flow files cannot be started: {0}")]
    Engine(#[from] EngineBuildError),
}

impl Daemon {
    /// Validates the flow files again and, when they are valid, puts them in force. Runs going
    /// on finish with the configuration they started with; invalid files change nothing.
    /// Says what changed (see `ReloadChanges`).
    pub async fn reload(&self) -> Result<ReloadChanges, ConfigReloadError> {
        let result = self.try_reload().await;
        match &result {
            Ok(changes) => {
                self.metrics.reload("accepted");
                tracing::info!(
                    flows = self.engine().project.flows.len(),
                    changed_systems = ?changes.systems,
                    changed_entities = ?changes.entities,
                    changed_flows = ?changes.flows,
                    changed_webhooks = ?changes.webhooks,
                    "configuration reloaded"
                );
            }
            Err(e) => {
                self.metrics.reload("rejected");
                let detail = match e {
                    ConfigReloadError::Invalid { diagnostics, .. } => diagnostics.clone(),
                    other => redact(&other.to_string()).into_owned(),
                };
                let message = redact(&e.to_string()).into_owned();
                tracing::error!(diagnostics = %detail, "{message}");
            }
        }
        self.emit(DaemonEvent::Reloaded {
            accepted: result.is_ok(),
        });
        result
    }

    async fn try_reload(&self) -> Result<ReloadChanges, ConfigReloadError> {
        let (project, diags) = crate::compile::project::check(&self.paths);
        let Some(project) = project else {
            return Err(ConfigReloadError::Invalid {
                count: diags.len(),
                diagnostics: crate::config::diagnostic::render_text(&diags),
            });
        };
        let old = self.engine();
        if project.state_url != old.project.state_url {
            tracing::warn!("`state.url` changed; it takes effect at the next start");
        }
        let old_daemon = old.project.daemon.as_ref().map(|d| &d.listen);
        if project.daemon.as_ref().map(|d| &d.listen) != old_daemon {
            tracing::warn!("`daemon.listen` changed; it takes effect at the next start");
        }
        let changes = ReloadChanges::between(&old.project, &project);
        let mut engine = Engine::new(Arc::new(project), self.store.clone(), self.clock.clone())?
            .index_memory(old.index_memory_bound());
        keep_unchanged_systems(&old, &mut engine);
        *self.switches.lock().unwrap_or_else(|e| e.into_inner()) = read_switches(&self.store).await;
        let project = engine.project.clone();
        *self.engine.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(engine);
        self.replan(&project);
        Ok(changes)
    }
}

/// A system whose spec did not change keeps its running self: client, token and rate-limit
/// budget (an ERP that locks clients out after a burst must not see the budget reset by a
/// reload), breaker and counters. A change of its entity mappings alone keeps it too.
fn keep_unchanged_systems(old: &Engine, new: &mut Engine) {
    for (name, sys) in new.systems.iter_mut() {
        if let Some(prev) = old.systems.get(name)
            && prev.spec() == sys.spec()
        {
            *sys = prev.clone();
        }
    }
}
