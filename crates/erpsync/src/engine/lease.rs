//! A flow's lease as a run holds it: taken before the run (from a holder that expired, or
//! at once from one proven dead), renewed on a task of its own every third of its ttl, and
//! released by `release` (or, when dropped unreleased, by a task of its own, or at once on a
//! thread of its own when the runtime is shutting down and will not run that task).
//! Taking it closes the runs its earlier holders left open.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Engine;
use super::error::LeaseTakeError;
use crate::redact::redact;
use crate::state::lease::{LeaseWatch, provably_dead};
use crate::state::{Fence, FlowName, Lease, Store};

/// Seconds a flow's lease lasts unless renewed, unless configured.
pub(crate) const DEFAULT_LEASE_TTL_SECS: u64 = 30;

/// Leases this process holds, by store and name: a second run of a flow in the same process
/// is refused here (the store would renew the process's own lease for it).
static HELD: Mutex<Option<HashSet<(usize, String)>>> = Mutex::new(None);

fn held_here() -> std::sync::MutexGuard<'static, Option<HashSet<(usize, String)>>> {
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

/// A flow's lease, held until released or dropped.
#[derive(Debug)]
pub struct HeldLease {
    store: Store,
    key: (usize, String),
    holder: String,
    pub(crate) watch: Arc<LeaseWatch>,
    renewal: tokio::task::JoinHandle<()>,
    released: bool,
}

/// Gives lease `key` up in the store, then lets this process take it again (not before: a
/// run started meanwhile would lose its grant to the release).
async fn give_up(store: &Store, key: &(usize, String), holder: &str) {
    if let Err(e) = store.coordination.release_lease(&key.1, holder).await {
        // It runs out after its ttl anyway.
        tracing::warn!(lease = %key.1, error = %redact(&e.to_string()), "cannot release lease");
    }
    if let Some(set) = held_here().as_mut() {
        set.remove(key);
    }
}

impl HeldLease {
    /// Whether the run may still write under it.
    pub(crate) fn held(&self) -> bool {
        self.watch.held()
    }
}

impl HeldLease {
    /// Gives the lease up, once the store has it released.
    pub(crate) async fn release(mut self) {
        self.renewal.abort();
        self.released = true;
        give_up(&self.store, &self.key, &self.holder).await;
    }
}

impl Drop for HeldLease {
    /// A lease dropped unreleased (a run cut short) is released by a task of its own, or,
    /// when no runtime will run that task, before this returns (see `Release`).
    fn drop(&mut self) {
        self.renewal.abort();
        if self.released {
            return;
        }
        let release = Release {
            store: self.store.clone(),
            key: self.key.clone(),
            holder: self.holder.clone(),
            done: false,
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(release.run());
            }
            Err(_) => drop(release),
        }
    }
}

/// How long a lease dropped without a runtime to release it may hold up the thread that
/// dropped it: past that, the lease runs out after its ttl.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// The release of a dropped lease. Run as a task, it gives the lease up there; dropped
/// before it did (the runtime is shutting down: its tasks are dropped unrun, as when a
/// command's runtime is dropped in the middle of a run; or there is no runtime), it gives
/// the lease up on a thread and runtime of its own and waits for that, so the next holder
/// (the same command started again, another node) does not wait out the ttl.
struct Release {
    store: Store,
    key: (usize, String),
    holder: String,
    done: bool,
}

impl Release {
    async fn run(mut self) {
        give_up(&self.store, &self.key, &self.holder).await;
        self.done = true;
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (store, key, holder) = (self.store.clone(), self.key.clone(), self.holder.clone());
        let released = std::thread::Builder::new()
            .name("erpsync-lease-release".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let done = rt.map(|rt| {
                    rt.block_on(async {
                        tokio::time::timeout(RELEASE_WAIT, give_up(&store, &key, &holder)).await
                    })
                });
                if !matches!(done, Ok(Ok(()))) {
                    // It runs out after its ttl.
                    tracing::warn!(lease = %key.1, "cannot release lease");
                    if let Some(set) = held_here().as_mut() {
                        set.remove(&key);
                    }
                }
            })
            .map(|t| t.join());
        // No thread, or it panicked: the lease runs out after its ttl.
        if !matches!(released, Ok(Ok(())))
            && let Some(set) = held_here().as_mut()
        {
            set.remove(&self.key);
        }
    }
}

impl Engine {
    /// How long a flow's lease lasts unless renewed (`daemon.lease_ttl_secs`).
    pub(crate) fn lease_ttl(&self) -> Duration {
        let secs = self
            .project
            .daemon
            .as_ref()
            .and_then(|d| d.lease_ttl_secs)
            .unwrap_or(DEFAULT_LEASE_TTL_SECS)
            .max(1);
        Duration::from_secs(secs)
    }

    /// Takes the lease of `flow` for this process, closes the runs of the flow that earlier
    /// holders left open, and keeps the lease renewed until the value is dropped. Must be
    /// called inside a tokio runtime.
    pub async fn take_lease(&self, flow: &str) -> Result<HeldLease, LeaseTakeError> {
        let name = Lease::of_flow(flow);
        let key = (
            Arc::as_ptr(&self.store.coordination) as *const () as usize,
            name.clone(),
        );
        {
            let mut held = held_here();
            if !held.get_or_insert_with(HashSet::new).insert(key.clone()) {
                return Err(LeaseTakeError::Busy(flow.to_string()));
            }
        }
        let result = self.grant(flow, &name).await;
        let token = match result {
            Ok(t) => t,
            Err(e) => {
                if let Some(set) = held_here().as_mut() {
                    set.remove(&key);
                }
                return Err(e);
            }
        };
        let (ttl, asked) = (self.lease_ttl(), Instant::now());
        let watch = Arc::new(LeaseWatch::new(
            Fence {
                lease: name.clone(),
                token,
            },
            ttl,
            asked,
        ));
        let renewal = tokio::spawn(renew(
            self.store.clone(),
            self.clock.clone(),
            watch.clone(),
            flow.to_string(),
            ttl,
        ));
        Ok(HeldLease {
            store: self.store.clone(),
            key,
            holder: self.instance.id.clone(),
            watch,
            renewal,
            released: false,
        })
    }

    /// The token of a fresh grant of lease `name`.
    async fn grant(&self, flow: &str, name: &str) -> Result<i64, LeaseTakeError> {
        let state = |source| LeaseTakeError::State {
            flow: flow.to_string(),
            source,
        };
        let me = &self.instance;
        let ttl = self.lease_ttl();
        let now = self.clock.now();
        let mut token = self
            .store
            .coordination
            .acquire_lease(name, &me.id, &me.node, now, ttl, None)
            .await
            .map_err(state)?;
        if token.is_none() {
            let current = self
                .store
                .coordination
                .leases()
                .await
                .map_err(state)?
                .into_iter()
                .find(|l| l.name == name);
            match current {
                Some(l) if l.held_at(now) && !provably_dead(&l.holder) => {
                    return Err(LeaseTakeError::Held {
                        flow: flow.to_string(),
                        node: l.node,
                        holder: l.holder,
                        until: l.expires_at,
                    });
                }
                Some(l) => {
                    if l.held_at(now) {
                        tracing::warn!(flow, node = %l.node, holder = %l.holder, "the process holding the flow's lease is gone; taking it over now");
                    }
                    token = self
                        .store
                        .coordination
                        .acquire_lease(name, &me.id, &me.node, now, ttl, Some(&l.holder))
                        .await
                        .map_err(state)?;
                }
                // Released meanwhile.
                None => {
                    token = self
                        .store
                        .coordination
                        .acquire_lease(name, &me.id, &me.node, now, ttl, None)
                        .await
                        .map_err(state)?;
                }
            }
        }
        let Some(token) = token else {
            // Another node took it between the two attempts.
            let l = self
                .store
                .coordination
                .leases()
                .await
                .map_err(state)?
                .into_iter()
                .find(|l| l.name == name);
            return Err(LeaseTakeError::Held {
                flow: flow.to_string(),
                node: l.as_ref().map(|l| l.node.clone()).unwrap_or_default(),
                holder: l.as_ref().map(|l| l.holder.clone()).unwrap_or_default(),
                until: l.map_or(now, |l| l.expires_at),
            });
        };
        let why = format!(
            "abandoned: its process lost the flow's lease or died; node `{}` took the flow over",
            me.node
        );
        match self
            .store
            .runs
            .abandon_runs(Some(FlowName::new(flow)), None, &me.id, now, &why)
            .await
        {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(
                    flow,
                    runs = n,
                    "runs left open by a process that lost the flow or died are closed as abandoned"
                )
            }
            Err(e) => {
                tracing::warn!(flow, error = %redact(&e.to_string()), "cannot close abandoned runs")
            }
        }
        Ok(token)
    }
}

/// Renews the lease every third of its ttl until aborted or lost. A state database that
/// hangs holds up only this task, and the watch counts the lease lost when renewals stop
/// getting through.
async fn renew(
    store: Store,
    clock: crate::clock::SharedClock,
    watch: Arc<LeaseWatch>,
    flow: String,
    ttl: Duration,
) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        let asked = Instant::now();
        let fence = &watch.fence;
        let renewed = store
            .coordination
            .renew_lease(&fence.lease, fence.token, clock.now(), ttl)
            .await;
        match renewed {
            Ok(true) => watch.renewed(asked),
            Ok(false) => {
                tracing::error!(flow, "lease lost to another holder; this run stops writing");
                watch.lose();
                return;
            }
            Err(e) => {
                tracing::warn!(flow, error = %redact(&e.to_string()), "cannot renew the flow's lease")
            }
        }
    }
}
