//! The store's connections: at most a fixed number open at once, each call on one of them
//! alone, idle ones kept for the next call, and a connection the server dropped replaced by
//! a fresh one at the next call (a restart of PostgreSQL costs the calls made while it was
//! down, not the daemon).

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

use tokio::runtime::{Handle, Id};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::Client;

use super::session::Session;
use crate::state::{Result, StateStoreError};

/// Connections a store opens at most, unless told otherwise.
pub(super) const CONNECTIONS: usize = 4;

/// A bounded set of connections to one database. A call that waits (on a row lock another
/// node holds, on a slow statement) keeps its connection and no other: the other calls go
/// on on the others, and wait for a free one only when all are busy.
pub(super) struct Pool {
    session: Session,
    /// One permit per connection that may be in use.
    slots: Semaphore,
    idle: Mutex<Vec<Idle>>,
}

/// A connection not in use, and the runtime its driver task runs on.
struct Idle {
    client: Client,
    runtime: Option<Id>,
}

impl Pool {
    pub(super) fn new(session: Session, size: usize) -> Self {
        Pool {
            session,
            slots: Semaphore::new(size.max(1)),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A connection for one call: an idle one still open, else a new one (set up and the
    /// schema migrated before it is handed out). Waits while every connection is in use.
    pub(super) async fn get(&self) -> Result<Pooled<'_>> {
        let slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| StateStoreError::Disconnected(self.session.shown.clone()))?;
        // A connection serves only calls on the runtime that drives it: one of another
        // runtime (one shutting down, whose tasks no longer run) could leave a call waiting
        // for ever.
        let runtime = Handle::try_current().ok().map(|h| h.id());
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match idle {
                Some(i) if !i.client.is_closed() && i.runtime == runtime => {
                    return Ok(Pooled {
                        client: Some(i.client),
                        runtime,
                        pool: self,
                        _slot: slot,
                    });
                }
                // Dropped by the server (restart, idle timeout), or of another runtime:
                // forget it.
                Some(_) => continue,
                None => break,
            }
        }
        let client = self.session.connect().await?;
        Ok(Pooled {
            client: Some(client),
            runtime,
            pool: self,
            _slot: slot,
        })
    }

    /// The connection settings, for a session outside the pool.
    pub(super) fn session(&self) -> &Session {
        &self.session
    }
}

/// A connection taken from the pool, given back when dropped (unless it was closed).
/// Dropped in the middle of a transaction (its caller was cancelled), the transaction was
/// rolled back first: the driver sends `ROLLBACK` when an unfinished one is dropped.
pub(super) struct Pooled<'p> {
    client: Option<Client>,
    runtime: Option<Id>,
    pool: &'p Pool,
    _slot: SemaphorePermit<'p>,
}

impl Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client
            .as_ref()
            .expect("a pooled connection is present until dropped")
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client
            .as_mut()
            .expect("a pooled connection is present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && !client.is_closed()
        {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Idle {
                    client,
                    runtime: self.runtime,
                });
        }
    }
}
