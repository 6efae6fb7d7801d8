//! Who holds a flow's lease, and whether it still does: a process identity that tells a dead
//! holder from a live one, the fencing token of a grant, and the watch a run consults before
//! every remote write.
//!
//! A lease is granted with a token that grows with every grant. State writes of a run name
//! the token and are refused once another grant replaced it (`Store::fenced`), so a run that
//! lost its lease cannot write state. Remote systems know nothing of tokens: before each
//! write to one, the run asks its `LeaseWatch`, which counts the lease as lost a margin
//! before it could expire anywhere, on the monotonic clock (which keeps running while the
//! process is stopped, so a process resumed after a pause finds its lease gone).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The lease a state write is made under: its name and the token of its grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub lease: String,
    pub token: i64,
}

/// This process as a lease holder: `id` is unique per process (host, process id and start
/// time), `node` is the label operators gave the node (`daemon.node_id`, default the host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub node: String,
}

impl Instance {
    /// This process, labelled `node` (the host name when none is given).
    pub fn current(node: Option<&str>) -> Self {
        Instance {
            id: process_id().to_string(),
            node: node
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .unwrap_or_else(host),
        }
    }
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && !h.contains(':'))
        .unwrap_or_else(|| "node".to_string())
}

/// `HOST:PID:START`, where START is the boot id's first characters and the process start
/// time in clock ticks since boot (Linux); elsewhere a random value, which can never be
/// proven dead (such holders lose their leases when they expire).
fn process_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let pid = std::process::id();
        let start = start_stamp(pid).unwrap_or_else(|| format!("r{:016x}", rand::random::<u64>()));
        format!("{}:{pid}:{start}", host())
    })
}

fn boot_id() -> Option<String> {
    let b = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(b.trim().chars().filter(|c| *c != '-').take(8).collect())
}

/// When process `pid` started, as `BOOT-TICKS`; None when there is no such process (or no
/// `/proc`).
fn start_stamp(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: fields are counted after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let ticks = rest.split_whitespace().nth(19)?;
    Some(format!("{}-{ticks}", boot_id()?))
}

/// Whether the holder `id` is provably gone: it ran on this host, and its process id is free
/// or taken by a process started at another time (or in another boot). A holder on another
/// host, or one this cannot read, is never called dead.
pub fn provably_dead(id: &str) -> bool {
    let mut parts = id.rsplitn(3, ':');
    let (Some(start), Some(pid), Some(h)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    if h != host() || start.starts_with('r') || start_stamp(std::process::id()).is_none() {
        return false;
    }
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    start_stamp(pid).as_deref() != Some(start)
}

/// Whether a run still holds its lease, as far as it may act on it.
#[derive(Debug)]
pub(crate) struct LeaseWatch {
    pub(crate) fence: Fence,
    ttl: Duration,
    /// The lease is counted as lost from then on, unless renewed first.
    deadline: Mutex<Instant>,
    lost: AtomicBool,
}

impl LeaseWatch {
    /// A lease granted for `ttl` by a request sent at `asked`.
    pub(crate) fn new(fence: Fence, ttl: Duration, asked: Instant) -> Self {
        LeaseWatch {
            fence,
            ttl,
            deadline: Mutex::new(asked + Self::usable(ttl)),
            lost: AtomicBool::new(false),
        }
    }

    /// How long after a grant or renewal the holder acts on it: short of the ttl by a sixth
    /// (at least 1 s, at most 10 s), for clock drift between nodes and the time a request
    /// takes to go out after the check.
    fn usable(ttl: Duration) -> Duration {
        let margin = (ttl / 6).clamp(Duration::from_secs(1), Duration::from_secs(10));
        ttl.saturating_sub(margin)
    }

    /// The lease was renewed by a request sent at `asked`.
    pub(crate) fn renewed(&self, asked: Instant) {
        let mut d = self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        *d = (*d).max(asked + Self::usable(self.ttl));
    }

    /// The lease is gone (another holder has it): no more writes, whatever the time.
    pub(crate) fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }

    /// Whether the run may still write.
    pub(crate) fn held(&self) -> bool {
        if self.lost.load(Ordering::SeqCst) {
            return false;
        }
        let d = *self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        if Instant::now() >= d {
            self.lose();
            return false;
        }
        true
    }
}

/// A write to a remote system refused because the run lost its lease.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lease `{0}` is lost: no more writes from this run")]
pub struct LeaseLostError(pub String);

tokio::task_local! {
    static WATCH: Arc<LeaseWatch>;
}

/// Runs `f` with `watch` as the lease every remote write in it is checked against.
pub(crate) async fn with_watch<F: std::future::Future>(
    watch: Option<Arc<LeaseWatch>>,
    f: F,
) -> F::Output {
    match watch {
        Some(w) => WATCH.scope(w, f).await,
        None => f.await,
    }
}

/// The lease of the current run, for a task it starts (`with_watch` there).
pub(crate) fn current_watch() -> Option<Arc<LeaseWatch>> {
    WATCH.try_with(Arc::clone).ok()
}

/// Whether the current run may write to a remote system now: always outside a leased run.
pub(crate) fn check_remote_write() -> Result<(), LeaseLostError> {
    WATCH
        .try_with(|w| {
            if w.held() {
                Ok(())
            } else {
                Err(LeaseLostError(w.fence.lease.clone()))
            }
        })
        .unwrap_or(Ok(()))
}

/// Whether the current run lost its lease.
pub(crate) fn lease_lost() -> bool {
    check_remote_write().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_gone_one_is_dead() {
        let me = Instance::current(None);
        assert!(!provably_dead(&me.id), "{}", me.id);
        if start_stamp(std::process::id()).is_none() {
            return; // no /proc: nobody is provably dead
        }
        let (rest, _) = me.id.rsplit_once(':').unwrap();
        assert!(provably_dead(&format!("{rest}:b0-1")), "restarted pid");
        let (h, _) = rest.split_once(':').unwrap();
        assert!(provably_dead(&format!("{h}:4194304:x-1")), "no such pid");
        assert!(!provably_dead("other-host:1:x-1"), "another host");
        assert!(!provably_dead("node-a"), "no identity");
    }

    #[test]
    fn a_watch_counts_its_lease_lost_before_it_expires() {
        let fence = Fence {
            lease: "flow:x".into(),
            token: 1,
        };
        let asked = Instant::now();
        let w = LeaseWatch::new(fence.clone(), Duration::from_secs(30), asked);
        assert!(w.held());
        let old = LeaseWatch::new(
            fence,
            Duration::from_secs(3),
            asked - Duration::from_secs(2),
        );
        assert!(!old.held(), "3 s lease: usable for 2 s");
        old.renewed(Instant::now());
        assert!(!old.held(), "once lost, lost for good");
        w.lose();
        assert!(!w.held());
    }
}
