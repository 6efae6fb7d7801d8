//! The flows' leases in the state store: taken before a run, and a flow another node held
//! taken over once that node's lease runs out.

use std::sync::Arc;
use std::time::Duration;

use super::{Cause, Daemon, Slot, TriggerRefusedError};
use crate::engine::{HeldLease, LeaseTakeError, RunOptions};
use crate::redact::redact;
use crate::state::Lease;

impl Daemon {
    /// Takes the flow's lease, or says why not (logged).
    pub(super) async fn take_lease(&self, flow: &str) -> Result<HeldLease, TriggerRefusedError> {
        match self.engine().take_lease(flow).await {
            Ok(l) => Ok(l),
            Err(LeaseTakeError::Held { node, until, .. }) => Err(TriggerRefusedError::Elsewhere {
                flow: flow.to_string(),
                node,
                until,
            }),
            Err(LeaseTakeError::Busy(_)) => Err(TriggerRefusedError::Busy(flow.to_string())),
            Err(e @ LeaseTakeError::State { .. }) => {
                tracing::error!(flow, error = %redact(&e.to_string()), "cannot take the flow's lease");
                Err(TriggerRefusedError::StateUnavailable(flow.to_string()))
            }
        }
    }

    /// A scheduled run skipped because another node holds the flow is tried once more just
    /// after that node's lease would run out: if that node died, this one takes the flow over
    /// then, not at the next firing. (A live holder has renewed it by then: nothing happens.)
    /// Paced on wall time, like lease renewal.
    pub(super) fn retry_when_lease_ends(
        self: &Arc<Self>,
        flow: String,
        opts: RunOptions,
        cause: Cause,
    ) -> futures::future::BoxFuture<'_, ()> {
        // Boxed: the run it starts may come back here.
        Box::pin(async move {
            let name = Lease::of_flow(&flow);
            let Ok(leases) = self.store.coordination.leases().await else {
                return;
            };
            let Some(until) = leases
                .into_iter()
                .find(|l| l.name == name)
                .map(|l| l.expires_at)
            else {
                return;
            };
            let ttl = self.engine().lease_ttl();
            let wait = (until - self.clock.now())
                .to_std()
                .unwrap_or_default()
                .min(ttl)
                + Duration::from_millis(500);
            let d = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                if d.is_stopping() {
                    return;
                }
                if !matches!(d.acquire(&flow, None, &cause), Slot::Taken) {
                    return;
                }
                match d.take_lease(&flow).await {
                    Ok(lease) => {
                        let _guard = d.work_guard();
                        tracing::info!(flow, %cause, "the flow's lease ran out; this node takes the flow over");
                        d.run_held(flow, opts, cause, Some(lease)).await;
                    }
                    Err(_) => d.release_slot(&flow),
                }
            });
        })
    }
}
