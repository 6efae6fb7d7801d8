//! What the handles of both simulators share: where the simulator listens, its counters,
//! faults and clock, the credentials a client needs, and stopping it.

use std::net::SocketAddr;
use std::sync::Arc;

use super::counters::Counters;
use super::faults::FaultControl;
use super::server::{Core, Server};
use erpsync_clock::SharedClock;

/// Lets a simulator's handle, a struct with the [`SimHandle`] in its field `sim`, be used as
/// that [`SimHandle`].
macro_rules! deref_to_sim {
    ($handle:ident) => {
        impl ::std::ops::Deref for $handle {
            type Target = $crate::handle::SimHandle;

            fn deref(&self) -> &$crate::handle::SimHandle {
                &self.sim
            }
        }
    };
}
pub(crate) use deref_to_sim;

/// The part of a running simulator that does not depend on which API it serves;
/// [`ShopHandle`](super::ShopHandle) and [`ErpHandle`](super::ErpHandle) dereference to it.
#[derive(Debug)]
pub struct SimHandle {
    core: Arc<Core>,
    server: Server,
    /// Path of the API below the base URL (`/api/v2`, `/api`).
    api_path: &'static str,
    credentials: (String, String),
}

impl SimHandle {
    pub(crate) fn new(
        core: Arc<Core>,
        server: Server,
        api_path: &'static str,
        credentials: (String, String),
    ) -> Self {
        SimHandle {
            core,
            server,
            api_path,
            credentials,
        }
    }

    /// `http://127.0.0.1:PORT`, the simulator's own domain.
    pub fn base_url(&self) -> String {
        self.core.base_url.clone()
    }

    /// Where the API starts: `…/api/v2` for the shop, `…/api` for the ERP.
    pub fn api_url(&self) -> String {
        format!("{}{}", self.core.base_url, self.api_path)
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    pub fn counters(&self) -> &Counters {
        &self.core.counters
    }

    pub fn faults(&self) -> &FaultControl {
        &self.core.faults
    }

    pub fn clock(&self) -> &SharedClock {
        &self.core.clock
    }

    /// What a client authenticates with: the shop's API key and secret, the ERP's client id
    /// and secret.
    pub fn credentials(&self) -> (String, String) {
        self.credentials.clone()
    }

    /// Stops the server and waits for it to end.
    pub async fn shutdown(self) {
        self.server.shutdown().await
    }

    /// Serves until the server task ends (for the command-line runner).
    pub async fn wait(self) {
        self.server.wait().await
    }
}
